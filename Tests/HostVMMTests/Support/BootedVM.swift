import TestSupport
import AgentProtocol
import Foundation
import Testing
import LinuxSystem

/// A real guest booted by the real `hostvmm up` in the foreground, in a
/// private state root so tests never touch a person's VMs.
final class BootedVM {
    let name: String
    let stateRoot: String
    let up: WatchedProcess
    /// Bound for boot-to-agent-ready under TCG on a loaded 2-core machine (typical: 6 s, the
    /// desktop guest 40 s). A gross-hang bound: in a full run the desktop guest once sat for
    /// over two minutes in RCU stalls while CPU-heavy unit tests held both cores, and failed at 180 s.
    static let bootTimeout: TimeInterval = 300

    private var extraEnvironment: [String: String] = [:]
    var environment: [String: String] { extraEnvironment.merging(["HOSTVMM_STATE_DIR": stateRoot]) { $1 } }

    /// One guest at a time: TCG guests booting side by side on 2 cores time
    /// each other's agents out. Suites run in parallel; their VMs take turns here,
    /// which is why the VM suites' time limits (30 min) are far above their own run time:
    /// a test's clock starts while it queues. The bounds are for gross hangs.
    private static let slot = DispatchSemaphore(value: 1)

    /// Runs `body` holding the one-guest slot: for a test whose guest another VMM (libvirt) runs.
    static func exclusively<T>(_ body: () throws -> T) throws -> T {
        guard slot.wait(timeout: .now() + 1500) == .success else {
            throw TestFailure("waited 25 minutes for other tests' VMs to finish")
        }
        defer { slot.signal() }
        return try body()
    }
    private var holdsSlot = false

    /// `hostvmm up --name NAME OPTIONS`, or exactly `arguments` when given (`up NAME` of a definition).
    init(name: String, options: [String] = [], extraEnvironment: [String: String] = [:], arguments: [String]? = nil) throws {
        guard Self.slot.wait(timeout: .now() + 1500) == .success else {
            throw TestFailure("waited 25 minutes for other tests' VMs to finish")
        }
        self.name = name
        self.extraEnvironment = extraEnvironment
        do {
            stateRoot = try TestEnvironment.temporaryDirectory("e2e")
            up = try WatchedProcess(TestEnvironment.hostvmm, arguments ?? (["up", "--name", name] + options),
                                    environment: extraEnvironment.merging(["HOSTVMM_STATE_DIR": stateRoot]) { $1 })
        } catch {
            Self.slot.signal()  // deinit does not run for a half-built object
            throw error
        }
        holdsSlot = true  // from here on deinit gives the slot back
        guard up.waitForLine(containing: "agent ready after", timeout: Self.bootTimeout) != nil else {
            up.signal(SIGKILL)
            throw TestFailure("no 'agent ready' within \(Self.bootTimeout) s:\n\(postMortem())")
        }
    }

    /// Runs `hostvmm ARGS` against this VM.
    func cli(_ args: [String], timeout: TimeInterval = 150) throws -> (status: Int32?, output: String) {
        try runCommand(TestEnvironment.hostvmm, args, environment: environment, timeout: timeout)
    }

    var stateDir: String { "\(stateRoot)/\(name)" }

    /// A raw QGA request through `hostvmm agent`, parsed.
    func agent(_ request: String) throws -> JSONValue {
        let r = try cli(["agent", name, request])
        guard let reply = try? JSONParser.parse(r.output) else {
            if r.output.contains("is not running") { throw TestFailure("\(r.output)\n\(postMortem())") }
            throw TestFailure("not JSON: \(r.output)")
        }
        return reply
    }

    /// What a VM that went away left behind: how `hostvmm up` ended, its last
    /// lines, and the tails of the console and QEMU logs.
    func postMortem() -> String {
        let ended = up.waitForExit(timeout: 5, killingIfRunning: false).map { "\($0)" } ?? "still running"
        let console = (try? String(contentsOfFile: "\(stateDir)/console.log", encoding: .utf8)) ?? "(none)"
        let qemuLog = (try? String(contentsOfFile: "\(stateDir)/qemu.log", encoding: .utf8)) ?? "(none)"
        return "--- hostvmm up (\(ended)) ---\n\(up.output.suffix(40).joined(separator: "\n"))\n"
            + "--- console ---\n\(console.suffix(2500))\n--- qemu.log ---\n\(qemuLog.suffix(1500))"
    }

    /// Runs a shell command in the guest with guest-exec (fire and forget); returns its pid.
    @discardableResult
    func guestShell(_ command: String) throws -> Int64 {
        let request = JSONWriter.string(.object([
            "execute": "guest-exec", "arguments": .object(["path": "/bin/sh", "arg": .array(["-c", .string(command)])]),
        ]))
        let reply = try agent(request)
        guard let pid = reply["return"]?["pid"]?.int64Value else {
            throw TestFailure("guest-exec failed: \(JSONWriter.string(reply))")
        }
        return pid
    }

    /// Panics the guest (sysrq "c" through guest-exec). The panic can win the race with
    /// the agent's reply: then `hostvmm agent` reports the channel closed or lost, which
    /// is the request's effect, not a failure. The caller checks the panic by its events.
    func crashGuest() throws {
        do {
            try guestShell("echo c > /proc/sysrq-trigger")
        } catch let failure as TestFailure
            where failure.description.contains("channel closed") || failure.description.contains("not connected")
        {
            return
        }
    }

    /// Runs a shell command in the guest and waits (bounded) for its exit code and output.
    func guestRun(_ command: String, timeout: TimeInterval = 120) throws -> (code: Int64?, output: String) {
        let request = JSONWriter.string(.object([
            "execute": "guest-exec",
            "arguments": .object(["path": "/bin/sh", "arg": .array(["-c", .string(command)]), "capture-output": "merged"]),
        ]))
        let started = try agent(request)
        guard let pid = started["return"]?["pid"]?.int64Value else { throw TestFailure("guest-exec: \(JSONWriter.string(started))") }
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            let status = try agent(#"{"execute":"guest-exec-status","arguments":{"pid":\#(pid)}}"#)
            if status["return"]?["exited"] == .bool(true) {
                let out = (try? Base64.decode(status["return"]?["out-data"]?.stringValue ?? "")) ?? []
                return (status["return"]?["exitcode"]?.int64Value, String(decoding: out, as: UTF8.self))
            }
        }
        throw TestFailure("guest command did not finish within \(timeout) s: \(command)")
    }

    /// Writes `data` to `path` in the guest with guest-file-write, 48 KiB a request.
    func putFile(_ path: String, _ data: [UInt8]) throws {
        let handle = try #require(try agent(#"{"execute":"guest-file-open","arguments":{"path":"\#(path)","mode":"w"}}"#)["return"]?.int64Value)
        var offset = 0
        while offset < data.count {
            let piece = data[offset..<min(data.count, offset + (48 << 10))]
            let r = try agent(#"{"execute":"guest-file-write","arguments":{"handle":\#(handle),"buf-b64":"\#(Base64.encode(piece))"}}"#)
            guard r["return"] != nil else { throw TestFailure("guest-file-write: \(JSONWriter.string(r))") }
            offset += piece.count
        }
        _ = try agent(#"{"execute":"guest-file-close","arguments":{"handle":\#(handle)}}"#)
    }

    /// Reads `path` from the guest with guest-file-read, 48 KiB a request.
    func getFile(_ path: String) throws -> [UInt8] {
        let handle = try #require(try agent(#"{"execute":"guest-file-open","arguments":{"path":"\#(path)","mode":"r"}}"#)["return"]?.int64Value)
        var data: [UInt8] = []
        while true {
            let r = try agent(#"{"execute":"guest-file-read","arguments":{"handle":\#(handle),"count":49152}}"#)
            guard let chunk = r["return"]?["buf-b64"]?.stringValue else { throw TestFailure("guest-file-read: \(JSONWriter.string(r))") }
            data += try Base64.decode(chunk)
            if r["return"]?["eof"]?.boolValue == true { break }
        }
        _ = try agent(#"{"execute":"guest-file-close","arguments":{"handle":\#(handle)}}"#)
        return data
    }

    /// Waits for the n-th line containing `text` in `up`'s output.
    func waitForOccurrence(_ text: String, count: Int, timeout: TimeInterval) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if up.count(containing: text) >= count { return true }
            _ = up.waitForLine(containing: text, after: up.output.count, timeout: max(0.1, deadline.timeIntervalSinceNow))
        }
        return up.count(containing: text) >= count
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
        if holdsSlot { Self.slot.signal() }
    }
}
