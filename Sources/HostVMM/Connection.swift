import AgentProtocol
import CLinuxSupport
import LinuxSystem
#if canImport(Glibc)
import Glibc
#endif

/// A stream socket on the event loop, read line by line (QMP, the agent channel,
/// the control API): a StreamConnection with a LineFramer on its bytes.
final class LineConnection {
    private let stream: StreamConnection
    private var framer: LineFramer
    var fd: Int32 { stream.fd }
    var isClosed: Bool { stream.isClosed }

    var onOutput: (LineFramer.Output) -> Void = { _ in }
    /// Called once, when the peer closes or the socket fails.
    var onClose: () -> Void = {}

    init(fd: Int32, loop: EventLoop, framer: LineFramer = LineFramer()) throws(SystemError) {
        self.framer = framer
        stream = try StreamConnection(fd: fd, loop: loop)
        // Weak, and held strongly while delivering: an owner may drop us from a callback.
        stream.onBytes = { [weak self] bytes in
            guard let self else { return }
            for output in self.framer.feed(bytes) {
                self.onOutput(output)
                if self.stream.isClosed { return }
            }
        }
        stream.onClose = { [weak self] in self?.onClose() }
    }

    func send(_ bytes: [UInt8]) {
        stream.send(bytes)
    }

    func sendLine(_ value: JSONValue) {
        stream.send(Self.line(value))
    }

    /// `sendLine` with a copy of `descriptor` attached (SCM_RIGHTS), as QMP's `getfd` wants
    /// it; queued behind what is already queued. The caller still owns `descriptor`.
    func sendLine(_ value: JSONValue, passing descriptor: Int32) -> Bool {
        stream.send(Self.line(value), passing: [descriptor])
    }

    private static func line(_ value: JSONValue) -> [UInt8] {
        var bytes = JSONWriter.encode(value)
        bytes.append(0x0A)
        return bytes
    }

    /// Forgets a half-received line (after a timeout, say).
    func resetFraming() { framer.reset() }

    func close() { stream.close() }
}

/// A listening unix socket on the loop that hands each accepted fd over.
final class Listener {
    let path: String
    let fd: Int32
    private let loop: EventLoop
    private var watch: WatchHandle?

    init(path: String, loop: EventLoop, backlog: Int32 = 8, onAccept: @escaping (Int32) -> Void) throws(SystemError) {
        self.path = path
        self.loop = loop
        fd = try UnixSocket.listen(path: path, backlog: backlog)
        Syscall.setNonBlocking(fd)
        watch = try loop.watch(fd: fd, events: .read) { [fd] _ in
            guard let client = try? UnixSocket.accept(fd) else { return }
            onAccept(client)
        }
    }

    func close() {
        if let watch { loop.remove(watch) }
        watch = nil
        Glibc.close(fd)
        unlink(path)
    }
}
