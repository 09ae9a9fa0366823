import AgentProtocol
import CLinuxSupport
import LinuxSystem
#if canImport(Glibc)
import Glibc
#endif

/// A non-blocking stream socket on the event loop, read line by line (QMP, the
/// agent channel, the control API). Writes are queued and flushed when the
/// socket can take them, so a slow peer never blocks the loop.
final class LineConnection {
    let fd: Int32
    private let loop: EventLoop
    private var watch: WatchHandle?
    private var framer: LineFramer
    private var outbox: [UInt8] = []
    private(set) var isClosed = false

    var onOutput: (LineFramer.Output) -> Void = { _ in }
    /// Set for a connection that is not line-framed (the D-Bus console): bytes as they come.
    var onBytes: (([UInt8]) -> Void)?
    /// Called once, when the peer closes or the socket fails.
    var onClose: () -> Void = {}

    init(fd: Int32, loop: EventLoop, framer: LineFramer = LineFramer()) throws(SystemError) {
        self.fd = fd
        self.loop = loop
        self.framer = framer
        Syscall.setNonBlocking(fd)
        watch = try loop.watch(fd: fd, events: .read) { [weak self] events in self?.handle(events) }
    }

    /// A connection dropped without `close()` still releases its fd and watch, on the loop.
    deinit {
        guard !isClosed else { return }
        let (loop, watch, fd) = (self.loop, self.watch, self.fd)
        loop.execute {
            if let watch { loop.remove(watch) }
            Glibc.close(fd)
        }
    }

    func send(_ bytes: [UInt8]) {
        guard !isClosed else { return }
        outbox.append(contentsOf: bytes)
        flush()
    }

    func sendLine(_ value: JSONValue) {
        send(Self.line(value))
    }

    /// `sendLine` with `descriptor` attached (see `send(_:passing:)`).
    func sendLine(_ value: JSONValue, passing descriptor: Int32) -> Bool {
        send(Self.line(value), passing: descriptor)
    }

    private static func line(_ value: JSONValue) -> [UInt8] {
        var bytes = JSONWriter.encode(value)
        bytes.append(0x0A)
        return bytes
    }

    /// Sends `bytes` with `descriptor` attached (SCM_RIGHTS), as QMP's `getfd` wants it.
    /// Only when nothing else is queued, so the bytes cannot overtake earlier ones;
    /// false if that, or the send, failed (the caller still owns `descriptor`).
    func send(_ bytes: [UInt8], passing descriptor: Int32) -> Bool {
        flush()
        guard !isClosed, outbox.isEmpty else { return false }
        var fds = [descriptor]
        let n = bytes.withUnsafeBytes { raw in
            clinux_send_with_fds(fd, raw.baseAddress, raw.count, &fds, 1)  // retries EINTR itself
        }
        guard n > 0 else { return false }
        if n < bytes.count { send(Array(bytes[n...])) }  // the descriptor went with the first byte
        return true
    }

    /// Forgets a half-received line (after a timeout, say).
    func resetFraming() { framer.reset() }

    func close() {
        guard !isClosed else { return }
        isClosed = true
        if let watch { loop.remove(watch) }
        watch = nil
        Glibc.close(fd)
        onClose()
    }

    private func flush() {
        while !outbox.isEmpty {
            let n = outbox.withUnsafeBytes { raw in Syscall.retrying { write(fd, raw.baseAddress, raw.count) } }
            if n > 0 {
                outbox.removeFirst(n)
                continue
            }
            if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) { break }
            close()
            return
        }
        if let watch { loop.update(watch, events: outbox.isEmpty ? .read : [.read, .write]) }
    }

    private func handle(_ events: IOEvents) {
        if events.contains(.write) { flush() }
        guard !isClosed, events.contains(.read) || events.contains(.hangup) || events.contains(.error) else { return }
        switch Syscall.readSome(fd: fd) {
        case .data(let bytes):
            if let onBytes {
                onBytes(bytes)
                return
            }
            for output in framer.feed(bytes) {
                onOutput(output)
                if isClosed { return }
            }
        case .wouldBlock:
            break
        case .endOfStream, .failed:
            close()
        }
    }
}

/// A listening unix socket on the loop that hands each accepted fd over.
final class Listener {
    let path: String
    let fd: Int32
    private let loop: EventLoop
    private var watch: WatchHandle?

    init(path: String, loop: EventLoop, onAccept: @escaping (Int32) -> Void) throws(SystemError) {
        self.path = path
        self.loop = loop
        fd = try UnixSocket.listen(path: path)
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
