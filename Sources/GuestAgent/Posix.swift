#if canImport(Glibc)
import Glibc
#endif

/// A failed system call: which one, on what, and errno's text.
struct SystemError: Error, CustomStringConvertible {
    var call: String
    var subject: String?
    var errno: Int32

    var description: String {
        let what = subject.map { " \($0)" } ?? ""
        return "\(call)\(what): \(String(cString: strerror(errno)))"
    }
}

/// The guest agent's few syscalls, each retrying EINTR in one place.
enum Posix {
    static func retrying<T: BinaryInteger>(_ body: () -> T) -> T {
        while true {
            let r = body()
            if r >= 0 || errno != EINTR { return r }
        }
    }

    static func log(_ message: String) {
        let line = "guest-agent: \(message)\n"
        _ = line.withCString { write(2, $0, strlen($0)) }
    }

    /// Sleeps without a signal-unsafe API; used only while the host side is absent.
    static func pause(milliseconds: Int32) {
        _ = poll(nil, 0, milliseconds)
    }

    /// Writes everything, waiting (bounded by `timeoutMs` per stall) when the
    /// channel is full. Returns false if the peer went away or stayed stuck.
    static func writeAll(fd: Int32, _ bytes: [UInt8], timeoutMs: Int32 = 5000) -> Bool {
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
                let r = retrying { poll(&pfd, 1, timeoutMs) }
                if r <= 0 || (pfd.revents & Int16(POLLHUP | POLLERR)) != 0 { return false }
                continue
            }
            return false
        }
        return true
    }
}
