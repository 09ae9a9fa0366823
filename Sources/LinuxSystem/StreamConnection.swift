import CLinuxSupport
#if canImport(Glibc)
import Glibc
#endif

/// A non-blocking stream socket on the event loop, bytes as they come (the
/// usbredir relay, the D-Bus console; LineConnection frames lines on top).
///
/// Writes go to an outbox flushed when the socket can take them, so a slow
/// peer never blocks the loop. An outbox entry may carry descriptors
/// (SCM_RIGHTS): they travel with that entry's first byte, after everything
/// queued before it. The owner applies back-pressure with `pendingBytes`,
/// `onDrained` and `pauseReading()`.
public final class StreamConnection {
    public let fd: Int32
    private let loop: EventLoop
    private var watch: WatchHandle?
    private var outbox: [(bytes: [UInt8], fds: [Int32])] = []
    /// Bytes of the first entry already written.
    private var headWritten = 0
    public private(set) var pendingBytes = 0
    private var readingPaused = false
    /// What the watch currently asks epoll for (updated only when it changes).
    private var interest: IOEvents = .read
    /// Reads land here first: no fresh zeroed 64 KiB per read.
    private var readBuffer = [UInt8](repeating: 0, count: 65536)
    public private(set) var isClosed = false

    public var onBytes: ([UInt8]) -> Void = { _ in }
    /// Called once, when the peer closes, the socket fails, or `close()`.
    public var onClose: () -> Void = {}
    /// Called when the outbox empties after having held something.
    public var onDrained: () -> Void = {}

    /// Takes ownership of `fd` (made non-blocking).
    public init(fd: Int32, loop: EventLoop) throws(SystemError) {
        self.fd = fd
        self.loop = loop
        Syscall.setNonBlocking(fd)
        watch = try loop.watch(fd: fd, events: .read) { [weak self] events in self?.handle(events) }
    }

    /// A connection dropped without `close()` still releases its fd and watch, on the loop.
    deinit {
        guard !isClosed else { return }
        let (loop, watch, fd) = (self.loop, self.watch, self.fd)
        for entry in outbox { for d in entry.fds { Glibc.close(d) } }
        loop.execute {
            if let watch { loop.remove(watch) }
            Glibc.close(fd)
        }
    }

    /// Queues `bytes`; `passing` descriptors are duplicated, so the caller keeps its own.
    /// False if a descriptor could not be duplicated or the connection is closed.
    @discardableResult
    public func send(_ bytes: [UInt8], passing descriptors: [Int32] = []) -> Bool {
        guard !isClosed else { return false }
        precondition(descriptors.isEmpty || !bytes.isEmpty, "descriptors need at least one byte to travel with")
        var owned: [Int32] = []
        for d in descriptors {
            let copy = fcntl(d, F_DUPFD_CLOEXEC, 0)
            guard copy >= 0 else {
                for c in owned { Glibc.close(c) }
                return false
            }
            owned.append(copy)
        }
        guard !bytes.isEmpty else { return true }
        outbox.append((bytes, owned))
        pendingBytes += bytes.count
        flush()
        return true
    }

    /// Stops reading (the owner's buffer is full) until `resumeReading()`.
    public func pauseReading() {
        guard !readingPaused else { return }
        readingPaused = true
        updateInterest()
    }

    public func resumeReading() {
        guard readingPaused else { return }
        readingPaused = false
        updateInterest()
    }

    public func close() {
        guard !isClosed else { return }
        isClosed = true
        if let watch { loop.remove(watch) }
        watch = nil
        Glibc.close(fd)
        for entry in outbox { for d in entry.fds { Glibc.close(d) } }
        outbox.removeAll()
        pendingBytes = 0
        onClose()
    }

    private func flush() {
        let hadOutput = !outbox.isEmpty
        while let entry = outbox.first {
            let n: Int
            if headWritten == 0 && !entry.fds.isEmpty {
                n = entry.bytes.withUnsafeBytes { raw in
                    clinux_send_with_fds(fd, raw.baseAddress, raw.count, entry.fds, Int32(entry.fds.count))
                }
                if n > 0 {
                    for d in entry.fds { Glibc.close(d) }
                    outbox[0].fds = []
                }
            } else {
                n = entry.bytes.withUnsafeBytes { raw in
                    Syscall.retrying { write(fd, raw.baseAddress! + headWritten, raw.count - headWritten) }
                }
            }
            if n > 0 {
                headWritten += n
                pendingBytes -= n
                if headWritten == entry.bytes.count {
                    outbox.removeFirst()
                    headWritten = 0
                }
                continue
            }
            if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) { break }
            close()
            return
        }
        updateInterest()
        if hadOutput && outbox.isEmpty { onDrained() }
    }

    private func updateInterest() {
        guard let watch else { return }
        var events: IOEvents = readingPaused ? [] : .read
        if !outbox.isEmpty { events.insert(.write) }
        guard events != interest else { return }
        interest = events
        loop.update(watch, events: events)
    }

    private func handle(_ events: IOEvents) {
        if events.contains(.write) { flush() }
        // A hangup or error is reported even while paused: read then anyway (what is left is
        // bounded by the socket's buffer), or the level-triggered report would spin.
        guard !isClosed,
            (events.contains(.read) && !readingPaused) || events.contains(.hangup) || events.contains(.error)
        else { return }
        let n = readBuffer.withUnsafeMutableBytes { raw in Syscall.retrying { read(fd, raw.baseAddress, raw.count) } }
        if n > 0 {
            onBytes(Array(readBuffer[0..<n]))
        } else if n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK) {
            close()
        }
    }
}
