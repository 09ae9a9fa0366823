import CSpiceServer
import LinuxSystem
#if canImport(Glibc)
import Glibc
#endif

/// A "usbredir" char device: one SPICE usbredir channel, joined to the chardev
/// socket of one QEMU `usb-redir` device. Bytes pass unchanged both ways.
///
/// The connection to QEMU lives exactly as long as the SPICE client's channel, as
/// with QEMU's own `-chardev spicevmc,name=usbredir`: spice-server reports the
/// client (the char device's `state` callback), we connect to QEMU's listening
/// socket, and QEMU's usb-redir starts a fresh usbredir session (its hello) on
/// that open; when the client goes we close it, and QEMU unplugs the device from
/// the guest. If QEMU drops the connection (its parser refused the stream), the
/// channel stays dead until the client leaves; the next client starts afresh.
///
/// Flow control as the agent's port: QEMU's bytes wait here until the server
/// reads them (reading from QEMU pauses past `bufferLimit`); the client's bytes
/// are refused (0 taken) while more than `toQEMULimit` wait for QEMU, and the
/// server is woken when they drain (SPICE_CHAR_DEVICE_NOTIFY_WRITABLE).
public final class USBRedirCharDevice: SpiceCharDeviceHandler {
    /// spice-server's channel id for this device (registration order).
    public let channelID: Int
    public let qemuSocket: String
    private let loop: EventLoop
    private var port: SpiceCharDevicePort!
    private var qemu: StreamConnection?
    private var connectRetry: TimerHandle?
    private var connectDeadline: UInt64 = 0
    public private(set) var clientAttached = false
    /// Set when an inspection cut QEMU's connection, until the client leaves.
    public private(set) var isCut = false
    private var fromQEMU = ServerReadQueue()
    /// Client bytes written before QEMU's socket accepted us.
    private var earlyFromClient: [UInt8] = []
    static let bufferLimit = 1 << 20
    static let toQEMULimit = 1 << 20
    /// How long a client waits for QEMU's socket (it exists once QEMU has started).
    static let connectPatienceMs: UInt64 = 30_000

    /// A SPICE client opened (true) or closed (false) this channel.
    public var onClient: (Bool) -> Void = { _ in }

    /// What may go to QEMU: bytes to send now (possibly released earlier ones), or a
    /// reason to cut QEMU's connection (the client sent what QEMU cannot take).
    public enum Inspection { case forward([UInt8]), cut(String) }
    /// The client's bytes before they go to QEMU (default: all of them).
    public var inspectClientBytes: ([UInt8]) -> Inspection = { .forward($0) }
    /// QEMU's bytes (they go to the client unchanged); may release client bytes.
    public var inspectQEMUBytes: ([UInt8]) -> Inspection = { _ in .forward([]) }
    /// Called when an inspection cut the connection to QEMU.
    public var onCut: (String) -> Void = { _ in }
    public var onLog: (String) -> Void = { _ in }

    public init(channelID: Int, qemuSocket: String, loop: EventLoop) {
        self.channelID = channelID
        self.qemuSocket = qemuSocket
        self.loop = loop
        port = SpiceCharDevicePort(subtype: "usbredir", handler: self)
    }

    func register(with server: OpaquePointer) { port.register(with: server) }

    func unregister() {
        disconnectQEMU()
        port.unregister()
    }

    public var connectedToQEMU: Bool { qemu != nil }

    // MARK: - Client state

    func clientState(_ connected: Bool) {
        guard connected != clientAttached else { return }
        clientAttached = connected
        isCut = false
        if connected {
            connectDeadline = EventLoop.now() + Self.connectPatienceMs
            connectQEMU()
        } else {
            disconnectQEMU()
        }
        onClient(connected)
    }

    private func connectQEMU() {
        guard clientAttached, qemu == nil else { return }
        do {
            let fd = try UnixSocket.connect(path: qemuSocket)
            let connection = try StreamConnection(fd: fd, loop: loop)
            connection.onBytes = { [weak self] bytes in self?.receivedFromQEMU(bytes) }
            connection.onDrained = { [weak self] in self?.port.wakeup() }
            connection.onClose = { [weak self] in self?.qemuClosed() }
            qemu = connection
            if !earlyFromClient.isEmpty {
                connection.send(earlyFromClient)
                earlyFromClient = []
            }
        } catch {
            // QEMU not listening yet (the client came before QEMU started): try again shortly.
            guard EventLoop.now() < connectDeadline else {
                onLog("usbredir channel \(channelID): QEMU's socket \(qemuSocket) did not answer: \(error)")
                return
            }
            connectRetry = loop.schedule(afterMilliseconds: 100) { [weak self] in
                self?.connectRetry = nil
                self?.connectQEMU()
            }
        }
    }

    private func disconnectQEMU() {
        loop.cancel(connectRetry)
        connectRetry = nil
        let connection = qemu
        qemu = nil
        connection?.onClose = {}
        connection?.close()
        fromQEMU.removeAll()
        earlyFromClient = []
    }

    private func qemuClosed() {
        guard qemu != nil else { return }
        qemu = nil
        onLog("usbredir channel \(channelID): QEMU closed the connection; the channel works again after the client reconnects")
    }

    // MARK: - Bytes

    private func receivedFromQEMU(_ bytes: [UInt8]) {
        switch inspectQEMUBytes(bytes) {
        case .forward(let released): if !released.isEmpty { qemu?.send(released) }
        case .cut(let why): cut(why)
        }
        if isCut { return }
        fromQEMU.append(bytes)
        if fromQEMU.count >= Self.bufferLimit { qemu?.pauseReading() }
        port.wakeup()
    }

    func serverReads(into buffer: UnsafeMutablePointer<UInt8>, max: Int) -> Int {
        let n = fromQEMU.take(into: buffer, max: max)
        if n > 0 && fromQEMU.count < Self.bufferLimit { qemu?.resumeReading() }
        return n
    }

    func serverWrites(from buffer: UnsafePointer<UInt8>, count: Int) -> Int {
        // Nobody to deliver to (spice-server's leftovers of a gone client), or cut: dropped.
        guard clientAttached, !isCut else { return count }
        if let qemu, qemu.pendingBytes >= Self.toQEMULimit { return 0 }
        if qemu == nil {
            // Waiting for QEMU's socket: hold a bounded amount, then push back.
            guard connectRetry != nil else { return count }
            guard earlyFromClient.count < Self.toQEMULimit else { return 0 }
        }
        let forward: [UInt8]
        switch inspectClientBytes(Array(UnsafeBufferPointer(start: buffer, count: count))) {
        case .forward(let bytes): forward = bytes
        case .cut(let why):
            cut(why)
            return count
        }
        if let qemu { qemu.send(forward) } else { earlyFromClient += forward }
        return count
    }

    /// The client's stream is unfit for QEMU: close QEMU's side (QEMU unplugs the device
    /// and drops its parser) and ignore this client from now on; the next one starts afresh.
    private func cut(_ why: String) {
        guard !isCut else { return }
        isCut = true
        disconnectQEMU()
        onLog("usbredir channel \(channelID): \(why); the device is unplugged from the guest and this client's stream is ignored until it reconnects")
        onCut(why)
    }
}
