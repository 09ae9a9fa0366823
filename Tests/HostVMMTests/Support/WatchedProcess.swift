import Foundation
import LinuxSystem

/// A child process whose output is collected line by line on background
/// threads, so a test can wait for a line (with a bound) instead of sleeping.
/// Spawned with LinuxSystem (fork/exec with every other fd closed), so no
/// other test's pipes leak into it.
final class WatchedProcess: @unchecked Sendable {
    let pid: pid_t
    private let condition = NSCondition()
    private var lines: [String] = []
    private var openStreams = 2
    private var status: ExitStatus?

    init(_ executable: String, _ arguments: [String], environment: [String: String] = [:]) throws {
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        var outPipe: [Int32] = [0, 0]
        var errPipe: [Int32] = [0, 0]
        guard pipe(&outPipe) == 0, pipe(&errPipe) == 0 else { throw SystemError("pipe") }
        for fd in outPipe + errPipe { Syscall.setCloseOnExec(fd) }
        let devNull = open("/dev/null", O_RDONLY | O_CLOEXEC)
        defer { close(devNull) }
        pid = try Subprocess.spawn([executable] + arguments, environment: env.map { "\($0.key)=\($0.value)" },
                                   stdin: devNull, stdout: outPipe[1], stderr: errPipe[1])
        close(outPipe[1])
        close(errPipe[1])
        for fd in [outPipe[0], errPipe[0]] {
            Thread.detachNewThread { [self] in self.collect(fd) }
        }
        Thread.detachNewThread { [self, pid] in
            let s = try? Subprocess.wait(pid)
            condition.withLock {
                status = s ?? .exited(-1)
                condition.broadcast()
            }
        }
    }

    private func collect(_ fd: Int32) {
        var partial: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { raw in Syscall.retrying { read(fd, raw.baseAddress, raw.count) } }
            if n <= 0 { break }
            partial += buffer[0..<n]
            var newLines: [String] = []
            while let nl = partial.firstIndex(of: 0x0A) {
                newLines.append(String(decoding: partial[..<nl], as: UTF8.self))
                partial.removeSubrange(...nl)
            }
            if !newLines.isEmpty {
                condition.withLock {
                    lines += newLines
                    condition.broadcast()
                }
            }
        }
        close(fd)
        condition.withLock {
            if !partial.isEmpty { lines.append(String(decoding: partial, as: UTF8.self)) }
            openStreams -= 1
            condition.broadcast()
        }
    }

    var output: [String] { condition.withLock { lines } }
    var transcript: String { output.joined(separator: "\n") }

    /// Waits until a line after the first `skip` contains `text`; nil after `timeout` or at EOF.
    func waitForLine(containing text: String, after skip: Int = 0, timeout: TimeInterval) -> String? {
        waitForLine(after: skip, timeout: timeout) { $0.contains(text) }
    }

    /// Waits until a line after the first `skip` satisfies `matches`; nil after `timeout` or at EOF.
    func waitForLine(after skip: Int = 0, timeout: TimeInterval, where matches: (String) -> Bool) -> String? {
        let deadline = Date().addingTimeInterval(timeout)
        return condition.withLock {
            while true {
                if let line = lines.dropFirst(skip).first(where: matches) { return line }
                if openStreams == 0 { return nil }
                if !condition.wait(until: deadline) { return nil }
            }
        }
    }

    func count(containing text: String) -> Int { output.filter { $0.contains(text) }.count }

    func signal(_ sig: Int32) { kill(pid, sig) }

    /// Waits for exit (and the end of its output) within `timeout`; nil if it
    /// is still running, in which case it is killed unless `killingIfRunning` is false.
    func waitForExit(timeout: TimeInterval, killingIfRunning: Bool = true) -> ExitStatus? {
        let deadline = Date().addingTimeInterval(timeout)
        let result: ExitStatus? = condition.withLock {
            while status == nil || openStreams > 0 {
                if !condition.wait(until: deadline) { break }
            }
            return status
        }
        if result == nil && killingIfRunning { kill(pid, SIGKILL) }
        return result
    }

    /// Exit code for a normal exit; nil otherwise.
    func exitCode(timeout: TimeInterval) -> Int32? {
        if case .exited(let code)? = waitForExit(timeout: timeout) { return code }
        return nil
    }
}

/// Runs a command to completion and returns (exit code, stdout+stderr).
func runCommand(_ executable: String, _ arguments: [String], environment: [String: String] = [:],
                timeout: TimeInterval = 120) throws -> (status: Int32?, output: String)
{
    let p = try WatchedProcess(executable, arguments, environment: environment)
    let code = p.exitCode(timeout: timeout)
    return (code, p.transcript)
}
