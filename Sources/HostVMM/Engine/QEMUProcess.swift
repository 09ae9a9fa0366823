import LinuxSystem
#if canImport(Glibc)
import Glibc
#endif

/// QEMU as hostvmm's child: started with its own process group (a terminal's
/// Ctrl-C is hostvmm's to handle), killed by the kernel if hostvmm dies
/// (PR_SET_PDEATHSIG), and reaped through a pidfd on the event loop.
final class QEMUProcess {
    let pid: pid_t
    private let loop: EventLoop
    private let exitFD: Int32
    private var watch: WatchHandle?
    private(set) var exitStatus: ExitStatus?

    /// `inherit[i]` is QEMU's fd 3 + i (guest RAM).
    init(arguments: [String], logFD: Int32, inherit: [Int32] = [], loop: EventLoop,
         onExit: @escaping (ExitStatus) -> Void) throws(SystemError) {
        self.loop = loop
        let devNull = open("/dev/null", O_RDONLY | O_CLOEXEC)
        defer { close(devNull) }
        pid = try Subprocess.spawn(arguments, stdin: devNull, stdout: logFD, stderr: logFD, inherit: inherit,
                                   detach: .processGroup, dieWithParent: true)
        exitFD = try Subprocess.exitDescriptor(pid)
        watch = try loop.watch(fd: exitFD, events: .read) { [unowned self] _ in
            guard let status = Subprocess.poll(self.pid) else { return }
            self.exitStatus = status
            if let w = self.watch { self.loop.remove(w) }
            self.watch = nil
            close(self.exitFD)
            onExit(status)
        }
    }

    var isRunning: Bool { exitStatus == nil }

    func signal(_ sig: Int32) {
        if isRunning { kill(pid, sig) }
    }
}
