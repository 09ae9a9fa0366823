import AgentProtocol
import Foundation
import LinuxSystem

/// A real guest booted by the real `hostvmm up` in the foreground, in a
/// private state root so tests never touch a person's VMs.
final class BootedVM {
    let name: String
    let stateRoot: String
    let up: WatchedProcess
    /// Bound for boot-to-agent-ready under TCG on a loaded 2-core machine (typical: 6 s).
    static let bootTimeout: TimeInterval = 180

    var environment: [String: String] { ["HOSTVMM_STATE_DIR": stateRoot] }

    init(name: String) throws {
        self.name = name
        stateRoot = try TestEnvironment.temporaryDirectory("e2e")
        up = try WatchedProcess(TestEnvironment.hostvmm, ["up", "--name", name], environment: ["HOSTVMM_STATE_DIR": stateRoot])
        guard up.waitForLine(containing: "agent ready after", timeout: Self.bootTimeout) != nil else {
            let console = (try? String(contentsOfFile: "\(stateRoot)/\(name)/console.log", encoding: .utf8)) ?? ""
            up.signal(SIGKILL)
            throw TestFailure("no 'agent ready' within \(Self.bootTimeout) s:\n\(up.transcript)\n--- console ---\n\(console.suffix(3000))")
        }
    }

    /// Runs `hostvmm ARGS` against this VM.
    func cli(_ args: [String], timeout: TimeInterval = 150) throws -> (status: Int32?, output: String) {
        try runCommand(TestEnvironment.hostvmm, args, environment: environment, timeout: timeout)
    }

    func status() throws -> JSONValue {
        let r = try cli(["status", name])
        guard r.status == 0 else { throw TestFailure("status failed: \(r.output)") }
        return try JSONParser.parse(r.output)
    }

    /// Events `hostvmm up` printed so far ("event: {...}" lines), parsed.
    func events(named name: String) -> [JSONValue] {
        var found: [JSONValue] = []
        for line in up.output where line.hasPrefix("event: ") {
            guard let event = try? JSONParser.parse(String(line.dropFirst(7))) else { continue }
            if event["event"]?.stringValue == name { found.append(event) }
        }
        return found
    }

    /// Waits for `hostvmm up` to exit; nil if it did not within the bound.
    func upExitCode(timeout: TimeInterval = 120) -> Int32? { up.exitCode(timeout: timeout) }

    deinit {
        up.signal(SIGKILL)  // no-op when it already exited; QEMU dies with it (PDEATHSIG)
        _ = up.waitForExit(timeout: 10)
        try? FileManager.default.removeItem(atPath: stateRoot)
    }
}
