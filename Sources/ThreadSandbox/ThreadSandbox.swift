import CThreadSandbox
import Glibc
import LinuxSystem

/// Per-thread seccomp allow-lists (as Firecracker filters each of its threads):
/// a thread that parses data from the guest or from SPICE clients gets only the
/// system calls its work needs. Everything else, above all exec, opening files
/// and creating sockets, fails with EPERM on that thread; the rest of hostvmm
/// is unaffected.
public enum ThreadSandbox {
    public struct Profile: Sendable {
        public let name: String
        public let syscalls: [String]
    }

    /// spice-server's display worker ("SPICE Worker"): it decodes what display and
    /// cursor channel clients send and encodes the screen. Derived from strace of
    /// the thread serving spicy-screenshot and remote-viewer, plus what glibc and
    /// glib may need on paths those runs did not take (abort, allocation, time).
    /// Not allowed, among others: execve, execveat, fork, vfork, clone, open,
    /// openat, openat2, creat, socket, socketpair, connect, bind, listen, accept,
    /// ptrace, mount, prctl. (glib logging's look at /etc/localtime fails: UTC.)
    public static let spiceWorker = Profile(name: "SPICE Worker", syscalls: [
        // I/O on descriptors the worker was given (client streams, wakeup pipes).
        "read", "readv", "write", "writev", "recvmsg", "sendmsg", "recvfrom", "sendto",
        "poll", "ppoll", "close", "lseek", "fstat", "newfstatat", "fcntl", "ioctl", "eventfd2",
        "setsockopt", "getsockopt", "getsockname", "getpeername", "shutdown",
        // Memory.
        "mmap", "munmap", "mremap", "mprotect", "madvise", "brk",
        // Threads, signals, time.
        "futex", "set_robust_list", "rseq", "sched_yield", "rt_sigprocmask", "rt_sigreturn", "sigaltstack",
        "clock_gettime", "clock_nanosleep", "nanosleep", "gettimeofday", "getrandom",
        "getpid", "gettid", "tgkill", "restart_syscall", "exit", "exit_group",
    ])

    public struct Installed: Sendable, Equatable {
        public var profile: String
        public var threadID: Int32
        public var allowedSyscalls: Int
    }

    public enum Failure: Error, Equatable, CustomStringConvertible {
        case refusedByKernel(profile: String, errno: Int32)
        public var description: String {
            switch self {
            case .refusedByKernel(let p, let e):
                return "seccomp filter for \(p) not installed: \(String(cString: strerror(e)))"
            }
        }
    }

    nonisolated(unsafe) private static var installedThreads: [Installed] = []
    private static let lock = Monitor()

    /// Threads that installed a filter, for `hostvmm status`.
    public static var installed: [Installed] { lock.withLock { installedThreads } }

    /// Whether the calling thread is filtered.
    public static var isAppliedOnThisThread: Bool { thread_sandbox_is_applied() != 0 }

    /// Installs `profile` on the calling thread, for good. Idempotent per thread.
    @discardableResult
    public static func apply(_ profile: Profile) -> Result<Installed, Failure> {
        let tid = thread_sandbox_thread_id()
        if isAppliedOnThisThread {
            if let existing = installed.first(where: { $0.threadID == tid }) { return .success(existing) }
        }
        let names = profile.syscalls.map { strdup($0) }
        defer { names.forEach { free($0) } }
        let r = names.map { UnsafePointer<CChar>($0) }.withUnsafeBufferPointer {
            thread_sandbox_apply($0.baseAddress, Int32($0.count))
        }
        guard r >= 0 else { return .failure(.refusedByKernel(profile: profile.name, errno: -r)) }
        let entry = Installed(profile: profile.name, threadID: tid, allowedSyscalls: Int(r))
        lock.withLock { installedThreads.append(entry) }
        return .success(entry)
    }
}
