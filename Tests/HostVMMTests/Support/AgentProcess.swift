import TestSupport
import Foundation
import LinuxSystem

/// The real guest-agent binary on the host in unix-listen mode (as qemu-ga's
/// own tests run it), and a blocking connection to it.
final class AgentProcess {
    let dir: String
    let socketPath: String
    let process: WatchedProcess

    init() throws {
        // The agent may close its socket under a test's write (as in the fault tests).
        signal(SIGPIPE, SIG_IGN)
        dir = try TestEnvironment.temporaryDirectory("agent")
        socketPath = "\(dir)/qga.sock"
        process = try WatchedProcess(TestEnvironment.guestAgent, ["-m", "unix-listen", "-p", socketPath])
        guard process.waitForLine(containing: "listening on", timeout: 10) != nil else {
            throw TestFailure("guest-agent did not start: \(process.transcript)")
        }
    }

    func connect() throws -> AgentConnection { try AgentConnection(path: socketPath) }

    func stop() {
        process.signal(SIGTERM)
        _ = process.waitForExit(timeout: 5)
        try? FileManager.default.removeItem(atPath: dir)
    }
}

/// A blocking client that reads the agent's output as raw bytes.
final class AgentConnection {
    let fd: Int32
    private var buffer: [UInt8] = []

    init(path: String) throws { fd = try UnixSocket.connect(path: path) }
    deinit { close(fd) }

    func send(_ text: String) { send(Array(text.utf8)) }
    func send(_ bytes: [UInt8]) { _ = Syscall.writeAll(fd: fd, bytes) }

    /// Reads until `count` newline-terminated lines have arrived (bounded).
    func readLines(_ count: Int, timeout: Double = 10) throws -> [[UInt8]] {
        let deadline = Date().addingTimeInterval(timeout)
        while buffer.filter({ $0 == 0x0A }).count < count {
            let remaining = deadline.timeIntervalSinceNow
            guard remaining > 0 else { throw TestFailure("timed out; have \(String(decoding: buffer, as: UTF8.self))") }
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&pfd, 1, Int32(remaining * 1000)) > 0 else { continue }
            switch Syscall.readSome(fd: fd) {
            case .data(let d): buffer += d
            case .wouldBlock: continue
            case .endOfStream, .failed: throw TestFailure("connection closed")
            }
        }
        var lines: [[UInt8]] = []
        for _ in 0..<count {
            let nl = buffer.firstIndex(of: 0x0A)!
            lines.append(Array(buffer[..<nl]))
            buffer.removeSubrange(...nl)
        }
        return lines
    }

    func readLineText(timeout: Double = 10) throws -> String {
        String(decoding: try readLines(1, timeout: timeout)[0], as: UTF8.self)
    }
}
