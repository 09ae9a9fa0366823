import LinuxSystem
#if canImport(Glibc)
import Glibc
#endif

/// Delivers SIGINT/SIGTERM/SIGHUP to the event loop through a pipe (the
/// self-pipe trick). Unlike signalfd it needs no signal mask in every thread,
/// and Foundation may already have started threads by the time `up` runs.
final class SignalRelay {
    nonisolated(unsafe) private static var writeFD: Int32 = -1
    private let readFD: Int32
    private var watch: WatchHandle?

    init(loop: EventLoop, signals: [Int32] = [SIGINT, SIGTERM, SIGHUP], handler: @escaping (Int32) -> Void) throws(SystemError) {
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw SystemError("pipe") }
        for fd in fds {
            Syscall.setNonBlocking(fd)
            Syscall.setCloseOnExec(fd)
        }
        readFD = fds[0]
        Self.writeFD = fds[1]
        for sig in signals {
            signal(sig) { number in
                var byte = UInt8(truncatingIfNeeded: number)
                _ = write(SignalRelay.writeFD, &byte, 1)  // async-signal-safe
            }
        }
        watch = try loop.watch(fd: readFD, events: .read) { [readFD] _ in
            if case .data(let bytes) = Syscall.readSome(fd: readFD, max: 64) {
                for b in bytes { handler(Int32(b)) }
            }
        }
    }
}
