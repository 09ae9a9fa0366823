import AgentProtocol
#if canImport(Glibc)
import Glibc
#endif

/// Serves one open byte stream (a virtio port or an accepted socket) until the
/// peer closes it. Returns true when the host side merely went away (so the
/// caller keeps or reopens the channel), false on a hard error.
struct StreamSession {
    let fd: Int32
    let dispatcher: Dispatcher
    /// virtio-serial: read()==0 and POLLHUP mean "host absent", not end of stream.
    let hostAbsenceIsTransient: Bool

    func serve() -> Bool {
        var framer = QGAInputFramer()
        var buffer = [UInt8](repeating: 0, count: 4096)
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        while true {
            pfd.revents = 0
            let ready = Posix.retrying { poll(&pfd, 1, -1) }
            if ready < 0 { return false }
            let hangup = (pfd.revents & Int16(POLLHUP)) != 0
            let readable = (pfd.revents & Int16(POLLIN)) != 0
            if hangup && !readable {
                if !hostAbsenceIsTransient { return true }
                // qemu-ga: host side closed; keep the port, look again in 100 ms.
                framer.reset()
                Posix.pause(milliseconds: 100)
                continue
            }
            if (pfd.revents & Int16(POLLERR | POLLNVAL)) != 0 { return false }
            let n = buffer.withUnsafeMutableBytes { raw in Posix.retrying { read(fd, raw.baseAddress, raw.count) } }
            if n == 0 {
                if !hostAbsenceIsTransient { return true }
                framer.reset()
                Posix.pause(milliseconds: 100)
                continue
            }
            if n < 0 {
                if errno == EAGAIN || errno == EWOULDBLOCK { continue }
                return false
            }
            for output in framer.feed(buffer[0..<n]) {
                guard let reply = dispatcher.handle(output) else { continue }
                if !Posix.writeAll(fd: fd, reply) {
                    Posix.log("reply dropped: host side not accepting data")
                    framer.reset()
                    break
                }
            }
        }
    }
}

enum Channel {
    /// virtio-serial: open the port once and keep it; the host comes and goes.
    static func runVirtioSerial(path: String, dispatcher: Dispatcher) -> Int32 {
        while true {
            let fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC | O_NOCTTY)
            if fd < 0 {
                let err = errno
                Posix.log("cannot open \(path): \(String(cString: strerror(err))); retrying")
                Posix.pause(milliseconds: 1000)
                continue
            }
            Posix.log("serving \(path)")
            let ok = StreamSession(fd: fd, dispatcher: dispatcher, hostAbsenceIsTransient: true).serve()
            close(fd)
            if !ok {
                Posix.log("channel error on \(path); reopening")
                Posix.pause(milliseconds: 1000)
            }
        }
    }

    /// unix-listen: one client at a time, like qemu-ga; the next waits in the backlog.
    static func runUnixListen(path: String, dispatcher: Dispatcher) -> Int32 {
        let listener: Int32
        do {
            listener = try makeListener(path: path)
        } catch {
            Posix.log("\(error)")
            return 1
        }
        Posix.log("listening on \(path)")
        while true {
            let client = Posix.retrying { accept(listener, nil, nil) }
            if client < 0 {
                Posix.log("accept: \(String(cString: strerror(errno)))")
                Posix.pause(milliseconds: 100)
                continue
            }
            _ = fcntl(client, F_SETFD, FD_CLOEXEC)
            _ = StreamSession(fd: client, dispatcher: dispatcher, hostAbsenceIsTransient: false).serve()
            close(client)
        }
    }

    private static func makeListener(path: String) throws(SystemError) -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SystemError(call: "socket", subject: nil, errno: errno) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let pathBytes = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: addr.sun_path)
        guard pathBytes.count < capacity else {
            close(fd)
            throw SystemError(call: "bind", subject: path, errno: ENAMETOOLONG)
        }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            raw.copyBytes(from: pathBytes)
            raw[pathBytes.count] = 0
        }
        unlink(path)
        // Sockets we create are for their owner only (0600).
        let oldMask = umask(0o177)
        let bound = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        umask(oldMask)
        guard bound == 0 else {
            let err = errno
            close(fd)
            throw SystemError(call: "bind", subject: path, errno: err)
        }
        guard listen(fd, 4) == 0 else {
            let err = errno
            close(fd)
            throw SystemError(call: "listen", subject: path, errno: err)
        }
        return fd
    }
}
