import TestSupport
import AgentProtocol
import Foundation
import LinuxSystem
import Testing

/// Our guest-agent against the real qemu-ga (Debian qemu-guest-agent 10),
/// both on the host in unix-listen mode, fed the same corpus. Replies are
/// compared by kind, error class and result shape; deterministic replies in
/// full. Deliberate differences are listed in protocol.md §1.7 and checked
/// in `deliberateDifferences`.
@Suite(.serialized) final class DifferentialTests {
    let dir: String
    let reference: AgentUnderTest
    let ours: AgentUnderTest

    init() throws {
        dir = try TestEnvironment.temporaryDirectory("diff")
        let qemuGA = "/usr/sbin/qemu-ga"
        guard FileManager.default.isExecutableFile(atPath: qemuGA) else {
            throw TestFailure("\(qemuGA) missing: install qemu-guest-agent (scripts/setup.sh does)")
        }
        reference = try AgentUnderTest(name: "qemu-ga", argv: [qemuGA], dir: "\(dir)/qemu-ga")
        ours = try AgentUnderTest(name: "guest-agent", argv: [TestEnvironment.guestAgent], dir: "\(dir)/ours")
    }

    deinit {
        reference.stop()
        ours.stop()
        try? FileManager.default.removeItem(atPath: dir)
    }

    @Test func framingAndEnvelopes() throws { try run(QGACorpus.framing) }
    @Test func argumentValidation() throws { try run(QGACorpus.arguments) }
    @Test func machineQueries() throws { try run(QGACorpus.queries) }

    @Test func fileSession() throws {
        let files = "\(dir)/files"
        try FileManager.default.createDirectory(atPath: files, withIntermediateDirectories: true)
        try run(QGACorpus.files(in: files))
    }

    @Test func guestInfoListsTheSameCommandsWhereWeHaveThem() throws {
        let theirs = try reference.request(#"{"execute":"guest-info"}"#)
        let mine = try ours.request(#"{"execute":"guest-info"}"#)
        func names(_ v: JSONValue) -> Set<String> {
            Set(v["return"]?["supported_commands"]?.arrayValue?.compactMap { $0["name"]?.stringValue } ?? [])
        }
        let missing = names(theirs).subtracting(names(mine))
        // qemu-ga lists guest-get-devices (Windows only, always "unsupported" on Linux).
        #expect(missing.subtracting(["guest-get-devices"]).isEmpty, "commands qemu-ga has and we lack: \(missing.sorted())")
        #expect(Shape.of(theirs) == Shape.of(mine))
    }

    @Test func execAndStatus() throws {
        for request in QGACorpus.exec {
            let a = try reference.runToCompletion(request)
            let b = try ours.runToCompletion(request)
            #expect(a.start["return"] != nil && b.start["return"] != nil, "\(request)")
            var statusA = a.status
            var statusB = b.status
            // The pid differs by nature; everything else must match exactly.
            statusA = statusA.removingPID()
            statusB = statusB.removingPID()
            #expect(statusA == statusB, "\(request)\n qemu-ga: \(JSONWriter.string(a.status))\n ours:    \(JSONWriter.string(b.status))")
            let again = try ours.request(#"{"execute":"guest-exec-status","arguments":{"pid":\#(b.pid)}}"#)
            #expect(again["error"]?["class"] == .string("GenericError"), "a reported exit must forget the process")
        }
    }

    /// Where we differ on purpose (protocol.md §1.7): each is asserted, so the
    /// list stays true.
    @Test func deliberateDifferences() throws {
        // qemu-ga answers a number out of double range with `inf`, which is not JSON.
        let inf = try ours.request(#"{"execute":"guest-ping","id":1e400}"#)
        #expect(inf["error"]?["class"] == .string("GenericError"))
        let theirsRaw = try reference.requestRaw(#"{"execute":"guest-ping","id":1e400}"#)
        #expect(theirsRaw.contains("inf"))
        // qemu-ga formats the pid of an unknown guest-exec-status as "PID ld".
        let unknown = try ours.request(#"{"execute":"guest-exec-status","arguments":{"pid":-1}}"#)
        #expect(unknown["error"]?["desc"] == .string("PID -1 does not exist"))
        // qemu-ga can lose the exit of a stderr-only capture; we report it.
        for request in QGACorpus.exec { _ = try ours.runToCompletion(request) }
        let stderrOnly = try ours.runToCompletion(QGACorpus.stderrOnlyCapture)
        #expect(stderrOnly.status["return"]?["err-data"] == .string(Base64.encode(Array("x\n".utf8))))
        #expect(stderrOnly.status["return"]?["out-data"] == nil)
    }

    private func run(_ cases: [QGACase]) throws {
        var mismatches: [String] = []
        for c in cases {
            let a = try reference.send(c.bytes)
            let b = try ours.send(c.bytes)
            if let why = Self.difference(a, b, c.compare) {
                mismatches.append("\(c.text.prefix(120)): \(why)\n    qemu-ga: \(JSONWriter.string(a).prefix(400))\n    ours:    \(JSONWriter.string(b).prefix(400))")
            }
        }
        #expect(mismatches.isEmpty, "\(mismatches.count) of \(cases.count) differ:\n\(mismatches.joined(separator: "\n"))")
    }

    static func difference(_ a: JSONValue, _ b: JSONValue, _ mode: QGACase.Compare) -> String? {
        if (a["error"] == nil) != (b["error"] == nil) { return "one succeeded, one failed" }
        if a["error"]?["class"] != b["error"]?["class"] { return "error classes differ" }
        switch mode {
        case .exact: return a == b ? nil : "replies differ"
        case .errorText: return a["error"]?["desc"] == b["error"]?["desc"] ? nil : "error texts differ"
        case .shape: return Shape.of(a) == Shape.of(b) ? nil : "result shapes differ"
        }
    }
}

/// The keys and JSON types of a value, ignoring values; arrays compare the
/// union of their elements' shapes (lists of different length still compare).
indirect enum Shape: Equatable, CustomStringConvertible {
    case scalar(String)
    case array(Set<String>)
    case object([String: Shape])

    static func of(_ v: JSONValue) -> Shape {
        switch v {
        case .object(let o): return .object(Dictionary(uniqueKeysWithValues: o.members.map { ($0.key, of($0.value)) }))
        case .array(let items): return .array(Set(items.map { of($0).description }))
        case .int, .uint: return .scalar("integer")
        default: return .scalar(v.typeName)
        }
    }

    var description: String {
        switch self {
        case .scalar(let s): return s
        case .array(let s): return "[" + s.sorted().joined(separator: "|") + "]"
        case .object(let o): return "{" + o.keys.sorted().map { "\($0):\(o[$0]!)" }.joined(separator: ",") + "}"
        }
    }
}

extension JSONValue {
    func removingPID() -> JSONValue {
        guard case .object(var o) = self else { return self }
        o["pid"] = nil
        return .object(o)
    }
}

/// One agent on the host in unix-listen mode with its own state directory.
final class AgentUnderTest {
    let name: String
    let process: WatchedProcess
    let connection: AgentConnection

    init(name: String, argv: [String], dir: String) throws {
        self.name = name
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let socket = "\(dir)/agent.sock"
        process = try WatchedProcess(argv[0], Array(argv.dropFirst()) + ["-m", "unix-listen", "-p", socket, "-t", dir])
        var connected: AgentConnection?
        let deadline = Date().addingTimeInterval(10)
        // The socket appears when the agent listens; there is no line to wait for in qemu-ga's output.
        while connected == nil && Date() < deadline {
            connected = try? AgentConnection(path: socket)
            if connected == nil { Syscall.pause(milliseconds: 10) }
        }
        guard let connected else { throw TestFailure("\(name) did not listen on \(socket): \(process.transcript)") }
        connection = connected
    }

    func stop() {
        process.signal(SIGTERM)
        _ = process.waitForExit(timeout: 5)
    }

    /// Sends bytes and returns the one reply (0xFF-prefixed lines are unwrapped).
    func send(_ bytes: [UInt8]) throws -> JSONValue {
        connection.send(bytes + [0x0A])
        var line = try connection.readLines(1, timeout: 30)[0]
        if line.first == 0xFF { line.removeFirst() }
        return try JSONParser.parse(line)
    }

    func request(_ text: String) throws -> JSONValue { try send(Array(text.utf8)) }

    func requestRaw(_ text: String) throws -> String {
        connection.send(Array(text.utf8) + [0x0A])
        return String(decoding: try connection.readLines(1, timeout: 30)[0], as: UTF8.self)
    }

    /// guest-exec, then guest-exec-status until it reports the exit (bounded).
    func runToCompletion(_ request: String) throws -> (start: JSONValue, pid: Int64, status: JSONValue) {
        let start = try self.request(request)
        guard let pid = start["return"]?["pid"]?.int64Value else { throw TestFailure("\(name): \(JSONWriter.string(start))") }
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            let status = try self.request(#"{"execute":"guest-exec-status","arguments":{"pid":\#(pid)}}"#)
            if status["return"]?["exited"] == .bool(true) { return (start, pid, status) }
            // Polling is the protocol's own way to wait here: guest-exec-status is the only signal.
            Syscall.pause(milliseconds: 20)
        }
        throw TestFailure("\(name): pid \(pid) of \(request) did not exit within 20 s")
    }
}
