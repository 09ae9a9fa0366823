import AgentProtocol
import CSpiceServer
import LinuxSystem
#if canImport(Glibc)
import Glibc
#endif

/// The "vdagent" char device (spice.md §7): the server's view of the guest's
/// com.redhat.spice.0 port, joined to that port's chardev socket.
///
/// - guest -> server (`read`): bytes from the socket, less our agent's
///   notices and what spice-server would choke on (GuestStreamFilter), are buffered, and the server is woken with
///   `spice_server_char_device_wakeup`.
/// - server -> guest (`write`): passed through MonitorsConfigRewriter (for a
///   real spice-vdagentd), queued and written without blocking; while the
///   queue is long the server is told 0 bytes were taken and is woken when the
///   socket drains (SPICE_CHAR_DEVICE_NOTIFY_WRITABLE). spice-server forwards
///   client chunks 1:1, so chunks towards the guest stay within 2048 bytes.
final class VDAgentCharDevice: SpiceCharDeviceHandler {
    private let fd: Int32
    private let loop: EventLoop
    private var port: SpiceCharDevicePort!
    private var watch: WatchHandle?
    /// Guest data the server has not read.
    private var fromGuest = ServerReadQueue()
    /// Guest data is held back past this much until the server reads it (back-pressure on the port).
    static let bufferLimit = 1 << 20
    /// Server data for the guest not yet taken by the port.
    private var toGuest: [UInt8] = []
    static let toGuestLimit = 64 << 10
    private var rewriter = MonitorsConfigRewriter()
    /// Our agent's notices to hostvmm, and chunks spice-server would drop the
    /// agent for, are taken out of the guest's stream here.
    private var guestFilter = GuestStreamFilter()
    var onNotice: ([UInt8]) -> Void = { _ in }
    var onDropped: (String) -> Void = { _ in }

    init(fd: Int32, loop: EventLoop) {
        self.fd = fd
        self.loop = loop
        Syscall.setNonBlocking(fd)
        port = SpiceCharDevicePort(subtype: "vdagent", handler: self)
    }

    func register(with server: OpaquePointer) {
        guard !port.registered else { return }
        port.register(with: server)
        watch = try? loop.watch(fd: fd, events: .read) { [weak self] events in
            if events.contains(.write) { self?.writable() }
            if !events.isDisjoint(with: [.read, .hangup, .error]) { self?.readable() }
        }
    }

    func unregister() {
        guard port.registered else { return }
        if let watch { loop.remove(watch) }
        watch = nil
        port.unregister()
    }

    func clientState(_ connected: Bool) {}

    private func readable() {
        if fromGuest.count >= Self.bufferLimit {
            rearm()  // stop reading until the server drains what it has
            return
        }
        switch Syscall.readSome(fd: fd) {
        case .data(let bytes):
            let split = guestFilter.feed(bytes)
            for why in split.dropped { onDropped(why) }
            for notice in split.notices { onNotice(notice) }
            guard !split.passThrough.isEmpty else { return }
            fromGuest.append(split.passThrough)
            port.wakeup()
        case .wouldBlock:
            break
        case .endOfStream, .failed:
            if let watch { loop.remove(watch) }
            watch = nil
        }
    }

    func serverReads(into buffer: UnsafeMutablePointer<UInt8>, max: Int) -> Int {
        let n = fromGuest.take(into: buffer, max: max)
        if n > 0 { rearm() }
        return n
    }

    /// Accepts the server's bytes into `toGuest` (through the MONITORS_CONFIG
    /// rewriter, which may change their length) while that queue is short;
    /// a long queue pushes back on the server until the port drains.
    func serverWrites(from buffer: UnsafePointer<UInt8>, count: Int) -> Int {
        guard flushToGuest() else { return -1 }
        guard toGuest.count < Self.toGuestLimit else { return 0 }
        toGuest += rewriter.feed(Array(UnsafeBufferPointer(start: buffer, count: count)))
        guard flushToGuest() else { return -1 }
        return count
    }

    /// Writes what it can of `toGuest`; false on a hard error of the socket.
    private func flushToGuest() -> Bool {
        while !toGuest.isEmpty {
            let n = toGuest.withUnsafeBufferPointer { p in Syscall.retrying { write(fd, p.baseAddress!, p.count) } }
            if n > 0 {
                toGuest.removeFirst(n)
                continue
            }
            if n < 0 && errno != EAGAIN && errno != EWOULDBLOCK { return false }
            rearm()  // wait until the port can take more
            return true
        }
        return true
    }

    /// Reading while the server keeps up; writing while `toGuest` waits for the port.
    private func rearm() {
        guard let watch else { return }
        var events: IOEvents = fromGuest.count < Self.bufferLimit ? .read : []
        if !toGuest.isEmpty { events.insert(.write) }
        loop.update(watch, events: events)
    }

    /// The port drained: finish the queue, then let the server write again.
    private func writable() {
        guard flushToGuest() else { return }
        rearm()
        if toGuest.isEmpty { port.wakeup() }
    }
}
