import Foundation

/// A child process whose output is collected line by line on background
/// threads, so a test can wait for a line (with a bound) instead of sleeping.
final class WatchedProcess: @unchecked Sendable {
    let process = Process()
    private let condition = NSCondition()
    private var lines: [String] = []
    private var openStreams = 2

    init(_ executable: String, _ arguments: [String], environment: [String: String] = [:]) throws {
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        process.environment = env
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        try process.run()
        for pipe in [out, err] {
            let handle = pipe.fileHandleForReading
            Thread.detachNewThread { [self] in
                var partial = Data()
                while true {
                    let chunk = handle.availableData
                    if chunk.isEmpty { break }
                    partial.append(chunk)
                    while let nl = partial.firstIndex(of: 0x0A) {
                        let line = String(decoding: partial[partial.startIndex..<nl], as: UTF8.self)
                        partial.removeSubrange(partial.startIndex...nl)
                        condition.withLock {
                            lines.append(line)
                            condition.broadcast()
                        }
                    }
                }
                condition.withLock {
                    if !partial.isEmpty { lines.append(String(decoding: partial, as: UTF8.self)) }
                    openStreams -= 1
                    condition.broadcast()
                }
            }
        }
    }

    var output: [String] { condition.withLock { lines } }
    var transcript: String { output.joined(separator: "\n") }

    /// Waits until a line contains `text`; returns it, or nil after `timeout` or at EOF.
    func waitForLine(containing text: String, after skip: Int = 0, timeout: TimeInterval) -> String? {
        let deadline = Date().addingTimeInterval(timeout)
        return condition.withLock {
            while true {
                if let line = lines.dropFirst(skip).first(where: { $0.contains(text) }) { return line }
                if openStreams == 0 { return nil }
                if !condition.wait(until: deadline) { return nil }
            }
        }
    }

    func count(containing text: String) -> Int { output.filter { $0.contains(text) }.count }

    /// Waits for exit within `timeout`; nil if still running (it is then killed).
    func waitForExit(timeout: TimeInterval) -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        condition.withLock {
            while openStreams > 0 { if !condition.wait(until: deadline) { break } }
        }
        let exited = DispatchSemaphore(value: 0)
        DispatchQueue.global().async { [process] in
            process.waitUntilExit()
            exited.signal()
        }
        guard exited.wait(timeout: .now() + max(0.1, deadline.timeIntervalSinceNow)) == .success else {
            process.interrupt()
            kill(process.processIdentifier, SIGKILL)
            return nil
        }
        return process.terminationStatus
    }
}

/// Runs a command to completion and returns (status, stdout+stderr).
func runCommand(_ executable: String, _ arguments: [String], environment: [String: String] = [:],
                timeout: TimeInterval = 120) throws -> (status: Int32?, output: String)
{
    let p = try WatchedProcess(executable, arguments, environment: environment)
    let status = p.waitForExit(timeout: timeout)
    return (status, p.transcript)
}
