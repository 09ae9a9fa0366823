import CLinuxSupport
import LinuxSystem
#if canImport(Glibc)
import Glibc
#endif

/// One vhost-user connection's byte stream, cut into messages, with the file
/// descriptors that came with each (SCM_RIGHTS).
///
/// Reads never go past the end of the message being read, so descriptors
/// received during a message belong to that message. The socket is
/// non-blocking; `next()` returns `.wouldBlock` until a whole message is in.
/// Owns the socket and any received descriptor not yet handed out.
final class VhostUserChannel {
    enum Next {
        case message(VhostUserHeader, [UInt8], [Int32])
        case wouldBlock
        case closed
        case failed(String)
    }

    let fd: Int32
    private var buffer: [UInt8] = []
    private var header: VhostUserHeader?
    private var fds: [Int32] = []

    init(fd: Int32) {
        self.fd = fd
        Syscall.setNonBlocking(fd)
    }

    deinit {
        for d in fds { close(d) }
        close(fd)
    }

    func next() -> Next {
        while true {
            if let h = header, buffer.count == Int(h.size) {
                let message = Next.message(h, buffer, fds)
                header = nil
                buffer = []
                fds = []
                return message
            }
            let want = (header.map { Int($0.size) } ?? VhostUserHeader.size) - buffer.count
            var chunk = [UInt8](repeating: 0, count: want)
            var received = [Int32](repeating: -1, count: Int(CLINUX_MAX_FDS))
            var count: Int32 = 0
            var truncated: Int32 = 0
            let n = chunk.withUnsafeMutableBytes { raw in
                received.withUnsafeMutableBufferPointer { fdBuf in
                    clinux_recv_with_fds(fd, raw.baseAddress, want, fdBuf.baseAddress, Int32(CLINUX_MAX_FDS), &count,
                                         &truncated)
                }
            }
            if n < 0 {
                if errno == EAGAIN || errno == EWOULDBLOCK { return .wouldBlock }
                return .failed("recvmsg: \(FileIO.errnoText())")
            }
            fds += received.prefix(Int(count))
            if truncated != 0 { return .failed(VhostUserError.ancillaryTruncated.description) }
            if n == 0 { return .closed }
            buffer += chunk.prefix(n)
            if header == nil && buffer.count == VhostUserHeader.size {
                do {
                    header = try VhostUserHeader.decode(buffer)
                } catch {
                    return .failed(error.description)
                }
                buffer = []
            }
        }
    }

    /// Sends a whole reply; false if the peer is gone or stays full for 5 s.
    func send(_ bytes: [UInt8]) -> Bool { Syscall.writeAll(fd: fd, bytes) }
}
