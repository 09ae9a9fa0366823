import Foundation
import Glibc
import LinuxSystem
import Testing
import TestSupport
import ThreadSandbox

/// The seccomp allow-lists spice-server's worker thread and hostvmm's device thread
/// run under, measured on a thread of the test's own: what they forbid fails with
/// EPERM there, what the thread needs still works, and the rest of the process is
/// not filtered.
@Suite struct ThreadSandboxTests {
    struct Outcome: Sendable {
        var installed: Result<ThreadSandbox.Installed, ThreadSandbox.Failure>
        var tid: Int32 = 0
        var errnos: [String: Int32] = [:]
        var pipeWorks = false
        var forkedChild = false
    }

    @Test(arguments: [ThreadSandbox.spiceWorker.name, ThreadSandbox.deviceBackends.name])
    func theProfileRefusesExecOpenAndSocketsOnItsThreadOnly(_ name: String) throws {
        let profile = try #require([ThreadSandbox.spiceWorker, ThreadSandbox.deviceBackends].first { $0.name == name })
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        defer { close(fds[0]); close(fds[1]) }
        let writeEnd = fds[1]
        let result = ResultBox<Outcome>()
        let release = ResultBox<Bool>()
        Threads.detach {
            var out = Outcome(installed: ThreadSandbox.apply(profile))
            out.tid = Int32(ThreadSandbox.thisThreadID)
            func failure(_ name: String, _ r: Int) { out.errnos[name] = r == -1 ? errno : 0 }
            // Without the filter, execve would replace the test process: try nothing then.
            guard case .success = out.installed else { result.set(out); return }
            failure("execve", Int(execve("/bin/true", [strdup("true"), nil], [nil])))
            failure("openat", Int(open("/etc/hostname", O_RDONLY)))
            failure("socket-inet", Int(socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)))
            failure("socket-unix", Int(socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)))
            if out.errnos["execve"] == EPERM {
                // Only once exec is known to be refused: fork is clone, refused too.
                let pid = fork()
                if pid == 0 { _exit(0) }
                if pid > 0 { out.forkedChild = true; var st: Int32 = 0; waitpid(pid, &st, 0) }
                failure("fork", Int(pid))
            }
            out.pipeWorks = write(writeEnd, "x", 1) == 1
            result.set(out)
            // Stay alive until the test has read this thread's /proc status.
            _ = release.wait(timeout: 30)
        }
        let out = try #require(result.wait(timeout: 30), "the sandboxed thread did not report")
        defer { release.set(true) }
        let installed = try out.installed.get()
        #expect(installed.profile == name)
        #expect(installed.namedSyscalls >= profile.syscalls.count - 3, "only \(installed.namedSyscalls) system calls resolved")
        for name in ["execve", "openat", "socket-inet", "socket-unix", "fork"] {
            #expect(out.errnos[name] == EPERM, "\(name): errno \(out.errnos[name].map(String.init) ?? "not tried")")
        }
        #expect(!out.forkedChild)
        #expect(out.pipeWorks, "a write on a descriptor the thread already had was refused")
        let taskStatus = try String(contentsOfFile: "/proc/self/task/\(out.tid)/status", encoding: .utf8)
        #expect(taskStatus.contains("Seccomp:\t2"), "\(taskStatus)")
        // This thread (and so the rest of hostvmm) is not filtered.
        let fd = open("/etc/hostname", O_RDONLY)
        #expect(fd >= 0, "the test's own thread lost open(): errno \(errno)")
        if fd >= 0 { close(fd) }
        #expect(!ThreadSandbox.isAppliedOnThisThread)
    }
}
