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
    /// the thread serving spicy-screenshot (remote-viewer's and spice-gtk's tests
    /// run under it in the suite), plus what glibc and
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

    /// hostvmm's device thread ("hostvmm-devices"): the vhost-user backends of the
    /// virtio keyboard, tablet, mouse, GPU and sound card, which decode QEMU's
    /// vhost-user messages and walk the rings and requests the guest writes. What
    /// it does: epoll over the sockets, kick and call eventfds it was given; accept
    /// QEMU's reconnection on a socket that already listens; receive descriptors
    /// (SET_MEM_TABLE's memfds) and map guest memory; allocate. Derived from strace
    /// of the thread through boot, a display, sound and input session and a QEMU
    /// reconnect, plus what glibc and the Swift runtime need on paths not taken
    /// (abort, allocation). Not allowed, among others: execve, execveat, fork,
    /// vfork, clone, open, openat, openat2, creat, socket, socketpair, connect,
    /// bind, listen, unlink (hostvmm's main loop removes the sockets), ptrace,
    /// mount, prctl, ioctl.
    public static let deviceBackends = Profile(name: "hostvmm-devices", syscalls: [
        // The loop and the descriptors it was given.
        "epoll_wait", "epoll_pwait", "epoll_ctl", "read", "readv", "write", "writev", "recvmsg", "sendmsg",
        "accept", "accept4", "close", "fcntl", "fstat", "newfstatat", "lseek",
        // Guest memory and the heap.
        "mmap", "munmap", "mremap", "mprotect", "madvise", "brk",
        // Threads, signals, time.
        "futex", "set_robust_list", "rseq", "sched_yield", "rt_sigprocmask", "rt_sigreturn", "sigaltstack",
        "clock_gettime", "clock_nanosleep", "nanosleep", "gettimeofday", "getrandom",
        "getpid", "gettid", "tgkill", "restart_syscall", "exit", "exit_group",
    ])

    /// The whole hostvmm process once QEMU runs (every thread, the vhost-user device
    /// backends' thread among them). hostvmm starts its programs (QEMU, the
    /// version probes) before that and none after, so a process or a program started
    /// later can only be an attack: new processes (clone without CLONE_THREAD, fork,
    /// vfork, posix_spawn) and exec are refused, and so are the calls that change
    /// privileges, namespaces, mounts or the kernel. Opening files and sockets stays
    /// allowed: the main loop writes crash bundles, opens host USB devices and
    /// reconnects to PulseAudio.
    public static let hostvmmProcess = Profile(name: "hostvmm", syscalls: [
        "execve", "execveat", "fork", "vfork", "ptrace", "process_vm_readv", "process_vm_writev",
        "setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setgroups", "setfsuid", "setfsgid",
        "capset", "unshare", "setns", "mount", "umount2", "pivot_root", "chroot",
        "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "bpf", "perf_event_open",
        "keyctl", "add_key", "request_key", "userfaultfd", "personality", "reboot", "swapon", "swapoff",
        "syslog", "acct", "quotactl", "open_by_handle_at", "name_to_handle_at", "iopl", "ioperm",
    ])

    public struct Installed: Sendable, Equatable {
        public var profile: String
        public var threadID: Int32
        /// The system calls the profile names that this kernel has: allowed (a thread's allow-list)
        /// or denied (the process deny-list).
        public var namedSyscalls: Int
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
    nonisolated(unsafe) private static var installedProcess: Installed?
    private static let lock = Monitor()

    /// Threads that installed a filter, for `hostvmm status`.
    public static var installed: [Installed] { lock.withLock { installedThreads } }

    /// The process-wide deny-list, once applied.
    public static var processInstalled: Installed? { lock.withLock { installedProcess } }

    /// Installs `profile` as a deny-list on every thread of the process, for good.
    /// Unless `allowNetwork`, network sockets (AF_INET, AF_INET6, AF_PACKET, AF_VSOCK)
    /// are refused too; unix and netlink sockets stay.
    @discardableResult
    public static func applyToProcess(_ profile: Profile, allowNetwork: Bool) -> Result<Installed, Failure> {
        if let existing = processInstalled { return .success(existing) }
        let r = withCStrings(profile.syscalls) { process_sandbox_apply($0, $1, allowNetwork ? 1 : 0) }
        guard r >= 0 else { return .failure(.refusedByKernel(profile: profile.name, errno: -r)) }
        let entry = Installed(profile: profile.name, threadID: thread_sandbox_thread_id(), namedSyscalls: Int(r))
        lock.withLock { installedProcess = entry }
        return .success(entry)
    }

    private static func withCStrings(_ names: [String], _ body: (UnsafePointer<UnsafePointer<CChar>?>?, Int32) -> Int32) -> Int32 {
        let copies = names.map { strdup($0) }
        defer { copies.forEach { free($0) } }
        return copies.map { UnsafePointer<CChar>($0) }.withUnsafeBufferPointer { body($0.baseAddress, Int32($0.count)) }
    }

    /// The calling thread's kernel id (gettid).
    public static var thisThreadID: Int32 { thread_sandbox_thread_id() }

    /// Whether the calling thread is filtered.
    public static var isAppliedOnThisThread: Bool { thread_sandbox_is_applied() != 0 }

    /// Installs `profile` on the calling thread, for good. Idempotent per thread.
    @discardableResult
    public static func apply(_ profile: Profile) -> Result<Installed, Failure> {
        let tid = thread_sandbox_thread_id()
        if isAppliedOnThisThread {
            if let existing = installed.first(where: { $0.threadID == tid }) { return .success(existing) }
        }
        let r = withCStrings(profile.syscalls) { thread_sandbox_apply($0, $1) }
        guard r >= 0 else { return .failure(.refusedByKernel(profile: profile.name, errno: -r)) }
        let entry = Installed(profile: profile.name, threadID: tid, namedSyscalls: Int(r))
        lock.withLock { installedThreads.append(entry) }
        return .success(entry)
    }
}
