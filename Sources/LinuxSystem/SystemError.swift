#if canImport(Glibc)
import Glibc
#endif

/// A failed system call: which one, on what, and errno.
public struct SystemError: Error, CustomStringConvertible, Sendable, Equatable {
    public var call: String
    public var subject: String?
    public var errno: Int32

    public init(_ call: String, _ subject: String? = nil, errno: Int32 = Glibc.errno) {
        self.call = call
        self.subject = subject
        self.errno = errno
    }

    public var description: String {
        let what = subject.map { " \($0)" } ?? ""
        return "\(call)\(what): \(String(cString: strerror(errno)))"
    }
}

public enum Syscall {
    /// Runs `body` until it does not fail with EINTR.
    @inlinable
    public static func retrying<T: BinaryInteger>(_ body: () -> T) -> T {
        while true {
            let r = body()
            if r >= 0 || errno != EINTR { return r }
        }
    }

    public static func setNonBlocking(_ fd: Int32) {
        let flags = fcntl(fd, F_GETFL)
        _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
    }

    public static func setCloseOnExec(_ fd: Int32) {
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
    }

    /// Writes everything to a (possibly non-blocking) fd, waiting up to
    /// `stallTimeoutMs` each time it is full. Returns false if the peer went
    /// away or stayed full.
    public static func writeAll(fd: Int32, _ bytes: [UInt8], stallTimeoutMs: Int32 = 5000) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { raw in
                retrying { write(fd, raw.baseAddress! + offset, raw.count - offset) }
            }
            if n > 0 {
                offset += n
                continue
            }
            if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) {
                var pfd = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                let r = retrying { poll(&pfd, 1, stallTimeoutMs) }
                if r <= 0 || (pfd.revents & Int16(POLLHUP | POLLERR)) != 0 { return false }
                continue
            }
            return false
        }
        return true
    }

    /// Reads what is available (up to `max` bytes). nil on error other than
    /// would-block; an empty array means end of stream.
    public static func readSome(fd: Int32, max: Int = 65536) -> ReadResult {
        var buffer = [UInt8](repeating: 0, count: max)
        let n = buffer.withUnsafeMutableBytes { raw in retrying { read(fd, raw.baseAddress, raw.count) } }
        if n > 0 { return .data(Array(buffer[0..<n])) }
        if n == 0 { return .endOfStream }
        if errno == EAGAIN || errno == EWOULDBLOCK { return .wouldBlock }
        return .failed(SystemError("read"))
    }

    public enum ReadResult {
        case data([UInt8])
        case endOfStream
        case wouldBlock
        case failed(SystemError)
    }

    /// Sleeps by polling nothing; used only for back-off, never to wait for an event.
    public static func pause(milliseconds: Int32) {
        _ = poll(nil, 0, milliseconds)
    }
}

import CLinuxSupport

extension Syscall {
    /// ioctl(2) with a pointer argument; -1 and errno on failure.
    public static func ioctl(_ fd: Int32, _ request: UInt, _ argument: UnsafeMutableRawPointer?) -> Int32 {
        retrying { clinux_ioctl_pointer(fd, request, argument) }
    }
}
