#if canImport(Glibc)
import Glibc
#endif

/// Unix stream sockets. Sockets we create are for their owner only (0600).
public enum UnixSocket {
    private static func address(_ path: String) throws(SystemError) -> sockaddr_un {
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else {
            throw SystemError("socket path too long", path, errno: ENAMETOOLONG)
        }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        return addr
    }

    private static func newSocket() throws(SystemError) -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SystemError("socket") }
        return fd
    }

    /// Binds and listens on `path`, replacing a stale socket file.
    public static func listen(path: String, backlog: Int32 = 8) throws(SystemError) -> Int32 {
        var addr = try address(path)
        let fd = try newSocket()
        unlink(path)
        let oldMask = umask(0o177)
        let bound = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        umask(oldMask)
        guard bound == 0 else {
            let err = SystemError("bind", path)
            close(fd)
            throw err
        }
        guard Glibc.listen(fd, backlog) == 0 else {
            let err = SystemError("listen", path)
            close(fd)
            throw err
        }
        return fd
    }

    /// Connects to `path` (blocking).
    public static func connect(path: String) throws(SystemError) -> Int32 {
        var addr = try address(path)
        let fd = try newSocket()
        let r = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                Syscall.retrying { Glibc.connect(fd, sa, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
        }
        guard r == 0 else {
            let err = SystemError("connect", path)
            close(fd)
            throw err
        }
        return fd
    }

    /// Accepts one connection; the new fd is close-on-exec.
    public static func accept(_ listener: Int32) throws(SystemError) -> Int32 {
        let fd = Syscall.retrying { Glibc.accept(listener, nil, nil) }
        guard fd >= 0 else { throw SystemError("accept") }
        Syscall.setCloseOnExec(fd)
        return fd
    }
}
