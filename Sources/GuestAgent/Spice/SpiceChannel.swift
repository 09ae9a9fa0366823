import AgentProtocol
import LinuxSystem
#if canImport(Glibc)
import Glibc
#endif

/// Serves the SPICE agent port (com.redhat.spice.0) on its own thread, next to
/// the QGA port: one binary, both protocols. Like the QGA side it keeps the
/// port while the host side comes and goes (read()==0 / POLLHUP).
///
/// Unix mode: when `path` names a unix-domain socket, the agent connects to
/// it instead (a SPICE server's agent socket, e.g. in tests on the host), and
/// reconnects every second after it closes.
final class SpiceChannel: @unchecked Sendable {
    let path: String
    let clipboard: ClipboardBackend
    private let writeLock = Monitor()
    private var fd: Int32 = -1

    /// Locks the sessions after the client leaves (nil: turned off).
    var disconnectLocker: DisconnectLocker?

    init(path: String, clipboard: ClipboardBackend) {
        self.path = path
        self.clipboard = clipboard
    }

    /// Bytes for the port from outside a session (HostNotice); dropped while the port is closed.
    func sendToPort(_ bytes: [UInt8]) { send(bytes) }

    func start() { Threads.detach { [self] in self.run() } }

    private func send(_ bytes: [UInt8]) {
        writeLock.withLock {
            guard fd >= 0 else { return }
            if !Syscall.writeAll(fd: fd, bytes, stallTimeoutMs: 30_000) { Log.info("SPICE agent: write to the port failed") }
        }
    }

    private func run() {
        var announcedMissing = false
        while true {
            let device = VirtioPorts.resolve(path)
            let isSocket = Self.isSocket(device)
            let port = isSocket ? Self.connect(device) : open(device, O_RDWR | O_NONBLOCK | O_CLOEXEC | O_NOCTTY)
            if port < 0 {
                if !announcedMissing { Log.info("SPICE agent: cannot open \(device): \(FileIO.errnoText()); retrying") }
                announcedMissing = true
                Syscall.pause(milliseconds: 1000)
                continue
            }
            announcedMissing = false
            Log.info("SPICE agent: serving \(device)\(isSocket ? " (unix socket)" : "")")
            writeLock.withLock { fd = port }
            serve(port, isSocket: isSocket)
            writeLock.withLock { fd = -1 }
            close(port)
            Syscall.pause(milliseconds: 1000)
        }
    }

    private static func isSocket(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFSOCK
    }

    /// A non-blocking connection to the socket at `path`, or -1 (errno set).
    private static func connect(_ path: String) -> Int32 {
        guard let fd = try? UnixSocket.connect(path: path) else { return -1 }
        Syscall.setNonBlocking(fd)
        return fd
    }

    /// Reads until a hard error (or, on a socket, its end). The host side
    /// opening is seen as data arriving after an absence: a new session then
    /// announces itself.
    private func serve(_ port: Int32, isSocket: Bool) {
        var reader = VDAgentReader()
        var active = false
        var pfd = pollfd(fd: port, events: Int16(POLLIN), revents: 0)
        let session = SpiceAgentSession(clipboard: clipboard) { [weak self] bytes in self?.send(bytes) }
        clipboard.attach(session)
        session.onClientDisconnected = { [disconnectLocker] in disconnectLocker?.clientDisconnected() }
        session.onClientConnected = { [disconnectLocker] in disconnectLocker?.clientConnected() }
        defer {
            clipboard.attach(nil)
            clipboard.clientLeft()
        }
        // spice-server attaches the agent when the guest opens the port; announce at once.
        session.start()
        active = true
        while true {
            pfd.revents = 0
            if Syscall.retrying({ poll(&pfd, 1, active ? -1 : 100) }) < 0 { return }
            if (pfd.revents & Int16(POLLIN)) == 0 && (pfd.revents & Int16(POLLHUP)) != 0 {
                if isSocket { return }
                if active { reader = VDAgentReader() }
                active = false
                Syscall.pause(milliseconds: 100)
                continue
            }
            switch Syscall.readSome(fd: port) {
            case .data(let bytes):
                if !active {
                    active = true
                    session.start()
                }
                for output in reader.feed(bytes) { session.handle(output) }
            case .wouldBlock:
                continue
            case .endOfStream:
                if isSocket { return }
                if active { reader = VDAgentReader() }
                active = false
                Syscall.pause(milliseconds: 100)
            case .failed:
                return
            }
        }
    }
}
