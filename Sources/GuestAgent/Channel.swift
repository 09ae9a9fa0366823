import AgentProtocol
import LinuxSystem
#if canImport(Glibc)
import Glibc
#endif

/// Reads one open byte stream (a virtio port or an accepted socket) and feeds
/// the pipeline until the peer closes it. Returns true when the host side
/// merely went away, false on a hard error.
struct StreamSession {
    let fd: Int32
    let pipeline: RequestPipeline
    /// virtio-serial: read()==0 and POLLHUP mean "host absent", not end of stream.
    let hostAbsenceIsTransient: Bool

    func serve() -> Bool {
        var framer = QGAInputFramer()
        var buffer = [UInt8](repeating: 0, count: 4096)
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        var attached = false
        func hostAbsent() {
            framer.reset()
            if attached { pipeline.hostGone() }
            attached = false
            // qemu-ga: host side closed; keep the port, look again in 100 ms.
            Syscall.pause(milliseconds: 100)
        }
        defer { if attached { pipeline.hostGone() } }
        while true {
            pfd.revents = 0
            if Syscall.retrying({ poll(&pfd, 1, -1) }) < 0 { return false }
            let hangup = (pfd.revents & Int16(POLLHUP)) != 0
            let readable = (pfd.revents & Int16(POLLIN)) != 0
            if hangup && !readable {
                if !hostAbsenceIsTransient { return true }
                hostAbsent()
                continue
            }
            if (pfd.revents & Int16(POLLERR | POLLNVAL)) != 0 { return false }
            let n = buffer.withUnsafeMutableBytes { raw in Syscall.retrying { read(fd, raw.baseAddress, raw.count) } }
            if n == 0 {
                if !hostAbsenceIsTransient { return true }
                hostAbsent()
                continue
            }
            if n < 0 {
                if errno == EAGAIN || errno == EWOULDBLOCK { continue }
                return false
            }
            if !attached {
                pipeline.attach(fd: fd)
                attached = true
            }
            for output in framer.feed(buffer[0..<n]) { pipeline.submit(output) }
        }
    }
}

enum Channel {
    /// virtio-serial: open the port once and keep it; the host comes and goes.
    static func runVirtioSerial(path: String, pipeline: RequestPipeline) -> Int32 {
        var lastError: Int32 = 0
        while true {
            let device = VirtioPorts.resolve(path)
            let fd = open(device, O_RDWR | O_NONBLOCK | O_CLOEXEC | O_NOCTTY)
            if fd < 0 {
                let err = errno
                // Say it once per distinct failure, then keep trying quietly.
                if err != lastError { Log.info("cannot open \(device): \(FileIO.errnoText(err)); retrying every second") }
                lastError = err
                Syscall.pause(milliseconds: 1000)
                continue
            }
            lastError = 0
            Log.info("serving \(device)")
            let ok = StreamSession(fd: fd, pipeline: pipeline, hostAbsenceIsTransient: true).serve()
            close(fd)
            if !ok {
                Log.info("channel error on \(device); reopening")
                Syscall.pause(milliseconds: 1000)
            }
        }
    }

    /// unix-listen: one client at a time, like qemu-ga; the next waits in the backlog.
    static func runUnixListen(path: String, pipeline: RequestPipeline) -> Int32 {
        let listener: Int32
        do {
            listener = try UnixSocket.listen(path: path)
        } catch {
            Log.info("\(error)")
            return 1
        }
        Log.info("listening on \(path)")
        while true {
            let client: Int32
            do {
                client = try UnixSocket.accept(listener)
            } catch {
                Log.info("\(error)")
                Syscall.pause(milliseconds: 100)
                continue
            }
            _ = StreamSession(fd: client, pipeline: pipeline, hostAbsenceIsTransient: false).serve()
            close(client)
        }
    }
}
