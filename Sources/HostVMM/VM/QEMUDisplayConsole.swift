import AgentProtocol
import LinuxSystem
#if canImport(Glibc)
import Glibc
#endif

/// hostvmm's peer-to-peer D-Bus connection to QEMU's `-display dbus,p2p=yes`,
/// for one call: `org.qemu.Display1.Console.SetUIInfo`, the way a display tells
/// QEMU the size of its window.
///
/// Why: with `vhost-user-gpu-pci`, QEMU keeps the device's `events_read` itself
/// and answers a backend's config-change message only with "unhandled backend
/// config change" (hw/display/vhost-user-gpu.c). The guest re-reads display info
/// (which our backend answers) only after QEMU raises VIRTIO_GPU_EVENT_DISPLAY,
/// and QEMU does that only when a display calls its console's `ui_info`. QEMU's
/// other displays that could (VNC, SDL, GTK) refuse this console because it
/// asks for dmabuf support; the D-Bus console's own listener has it.
///
/// The socket is one end of a socketpair given to QEMU with QMP `getfd` and
/// `add_client protocol=@dbus-display`: no bus, no Hello, QEMU is the
/// authentication server and we are its only client, as EXTERNAL.
final class QEMUDisplayConsole {
    static let consolePath = "/org/qemu/Display1/Console_0"
    static let consoleInterface = "org.qemu.Display1.Console"
    /// A reply or the auth line can be small; anything this large is not QEMU.
    static let maxBuffered = 1 << 20
    /// Calls QEMU may leave unanswered before the connection counts as dead.
    static let maxUnanswered = 64

    private enum State { case authenticating, ready, closed }

    private let connection: StreamConnection
    private var state = State.authenticating
    private var buffer: [UInt8] = []
    private var serial: UInt32 = 0
    /// Asked for before authentication finished.
    private var pendingSize: (width: Int, height: Int)?
    private var inFlight: [UInt32: (width: Int, height: Int)] = [:]

    var onLog: (String) -> Void = { _ in }
    /// QEMU took a size: the guest has been told its display changed.
    var onApplied: (_ width: Int, _ height: Int) -> Void = { _, _ in }

    var isOpen: Bool { state != .closed }

    init(fd: Int32, loop: EventLoop) throws(SystemError) {
        connection = try StreamConnection(fd: fd, loop: loop)
        connection.onBytes = { [unowned self] bytes in self.received(bytes) }
        connection.onClose = { [unowned self] in
            if self.state != .closed { self.onLog("display: QEMU closed its D-Bus display connection") }
            self.state = .closed
        }
        connection.send(DBusAuth.start(uid: getuid()))
    }

    func close() {
        state = .closed
        connection.close()
    }

    /// Tells QEMU the client's window is `width` x `height`; QEMU then raises the
    /// display event and the guest asks our backend for display info and EDID.
    func setSize(width: Int, height: Int) {
        switch state {
        case .authenticating: pendingSize = (width, height)
        case .ready: callSetUIInfo(width: width, height: height)
        case .closed: onLog("display: cannot pass \(width)x\(height) to QEMU: its D-Bus display connection is closed")
        }
    }

    private func callSetUIInfo(width: Int, height: Int) {
        guard inFlight.count < Self.maxUnanswered else {
            return fail("QEMU answered none of the last \(Self.maxUnanswered) size changes")
        }
        serial += 1
        inFlight[serial] = (width, height)
        // (qqiiuu): width_mm, height_mm, xoff, yoff, width, height. No millimetres:
        // the guest gets those from our EDID.
        let call = DBusMessage.methodCall(
            serial: serial, destination: nil, path: Self.consolePath, interface: Self.consoleInterface,
            member: "SetUIInfo",
            [.uint16(0), .uint16(0), .int32(0), .int32(0), .uint32(UInt32(width)), .uint32(UInt32(height))])
        connection.send(call.encode())
    }

    private func received(_ bytes: [UInt8]) {
        buffer += bytes
        guard buffer.count <= Self.maxBuffered else { return fail("more than 1 MiB unparsed from QEMU's D-Bus display") }
        if state == .authenticating {
            guard let reply = DBusAuth.takeReply(from: &buffer) else { return }
            if case .rejected(let line) = reply { return fail("QEMU's D-Bus display refused us: \(line)") }
            connection.send(DBusAuth.begin)
            state = .ready
            if let size = pendingSize {
                pendingSize = nil
                callSetUIInfo(width: size.width, height: size.height)
            }
        }
        while state == .ready {
            let next: DBusMessage?
            do { next = try DBusMessage.takeNext(from: &buffer) } catch { return fail("from QEMU's D-Bus display: \(error)") }
            guard let message = next else { return }
            // Only our calls' replies matter; QEMU sends nothing else on a connection
            // that registered no listener.
            guard let replyTo = message.replySerial, let size = inFlight.removeValue(forKey: replyTo) else { continue }
            if message.kind == .error {
                let text = message.body.first?.stringValue ?? ""
                onLog("display: QEMU refused \(size.width)x\(size.height): \(message.errorName ?? "error") \(text)")
            } else {
                onApplied(size.width, size.height)
            }
        }
    }

    private func fail(_ why: String) {
        onLog("display: \(why); closing that connection (window sizes reach the guest at its next display probe)")
        close()
    }
}
