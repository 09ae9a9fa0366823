import AgentProtocol
import Foundation
import LinuxSystem
import TestSupport
import Testing

/// The control socket reads QMP as QEMU's monitor does (issue #16): JSON values with or
/// without newlines between them. QEMU's own Python QMP library (qemu.qmp, whose
/// negotiation sends no newline) and its qmp-shell drive a running VM; raw bytes check
/// the framing itself (values back to back, split anywhere, a stray bracket).
@Suite(.serialized, .timeLimit(.minutes(30))) struct QMPToolingTests {
    static let venv = "/usr/local/lib/hostvmm/qmp-venv"
    static let client = "\(TestEnvironment.packageRoot)/Tests/HostVMMTests/Clients/qmp_tooling.py"

    /// Reads from `fd` until `count` JSON lines arrived (bounded), returning them parsed.
    static func readReplies(_ fd: Int32, count: Int, timeout: TimeInterval = 30) -> [JSONValue] {
        var framer = LineFramer()
        var replies: [JSONValue] = []
        let deadline = Date().addingTimeInterval(timeout)
        while replies.count < count, case let left = deadline.timeIntervalSinceNow, left > 0 {
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&pfd, 1, Int32(min(left, 1) * 1000)) > 0 else { continue }
            guard case .data(let bytes) = Syscall.readSome(fd: fd) else { break }
            for case .line(let line) in framer.feed(bytes) { if let v = try? JSONParser.parse(line) { replies.append(v) } }
        }
        return replies
    }

    @Test func qemuQMPLibraryQmpShellAndRawStreamsSpeakTheControlSocket() throws {
        let python = "\(Self.venv)/bin/python"
        try #require(FileManager.default.isExecutableFile(atPath: python), "no qemu.qmp venv at \(Self.venv) (scripts/setup.sh makes it)")
        let vm = try BootedVM(name: "qmp-tooling", options: ["--no-display", "--audio", "none"])
        let socket = "\(vm.stateDir)/control.sock"

        // Raw: greeting; then three requests in one write, no newlines, the third split
        // across two writes; then a stray '}' (an error), and the session goes on.
        let fd = try UnixSocket.connect(path: socket)
        defer { close(fd) }
        #expect(Self.readReplies(fd, count: 1).first?["QMP"] != nil, "no greeting")
        #expect(Syscall.writeAll(fd: fd, Array(#"{"execute":"qmp_capabilities","id":1}{"execute":"query-status","id":2}{"execute":"#.utf8)))
        #expect(Syscall.writeAll(fd: fd, Array(#""query-status","id":3}}"#.utf8) + Array(#" {"execute":"query-status","id":4}"#.utf8)))
        let replies = Self.readReplies(fd, count: 5)
        #expect(replies.count == 5, "\(replies.map(JSONWriter.string))")
        #expect(replies.compactMap { $0["id"]?.int64Value } == [1, 2, 3, 4], "\(replies.map(JSONWriter.string))")
        #expect(replies.filter { ($0["id"]?.int64Value ?? 0) >= 2 }.allSatisfy { $0["return"]?["state"] != nil },
                "\(replies.map(JSONWriter.string))")
        #expect(replies.contains { $0["error"]?["desc"]?.stringValue?.contains("JSON parse error") == true },
                "the stray '}' got no error: \(replies.map(JSONWriter.string))")

        // The session bound: with this one open, more than 64 connections at once get the
        // refusal instead of a greeting, and the open session still answers.
        var extra: [Int32] = []
        defer { extra.forEach { close($0) } }
        for _ in 0..<64 { extra.append(try UnixSocket.connect(path: socket)) }
        let firstReplies = extra.map { Self.readReplies($0, count: 1).first }
        #expect(firstReplies.filter { $0?["QMP"] != nil }.count == 63, "\(firstReplies.map { $0.map(JSONWriter.string) ?? "none" })")
        #expect(firstReplies.last??["error"]?["desc"]?.stringValue == "too many control connections (64)",
                "\(firstReplies.last.map { $0.map(JSONWriter.string) ?? "none" } ?? "none")")
        #expect(Syscall.writeAll(fd: fd, Array(#"{"execute":"query-status","id":5}"#.utf8)))
        #expect(Self.readReplies(fd, count: 1).first?["id"]?.int64Value == 5, "the open session stopped answering")
        extra.forEach { close($0) }
        extra = []
        // hostvmm sees those closes on its loop: wait (bounded) until a new client is greeted again.
        let greetedAgain = try waitUntil(timeout: 30, interval: 0.1) {
            let probe = try UnixSocket.connect(path: socket)
            defer { close(probe) }
            return Self.readReplies(probe, count: 1, timeout: 5).first?["QMP"] != nil
        }
        #expect(greetedAgain, "the closed sessions were never given back")

        // The pending-output bound: a client that sends 20,000 requests and reads nothing
        // is disconnected once 4 MiB of replies wait for it (20,000 status replies are
        // ~15 MiB); the open session goes on.
        signal(SIGPIPE, SIG_IGN)  // the write below may meet the closed socket
        let greedy = try UnixSocket.connect(path: socket)
        defer { close(greedy) }
        let requests = Array(#"{"execute":"qmp_capabilities"}"#.utf8)
            + Array([[UInt8]](repeating: Array(#"{"execute":"query-status"}"#.utf8), count: 20_000).joined())
        _ = Syscall.writeAll(fd: greedy, requests)
        var received = 0
        var framer = LineFramer()
        var closed = false
        let deadline = Date().addingTimeInterval(120)
        while !closed, Date() < deadline {
            var pfd = pollfd(fd: greedy, events: Int16(POLLIN), revents: 0)
            guard poll(&pfd, 1, 1000) > 0 else { continue }
            switch Syscall.readSome(fd: greedy) {
            case .data(let bytes): received += framer.feed(bytes).count
            default: closed = true
            }
        }
        #expect(closed, "a client that never read was not disconnected (\(received) replies so far)")
        #expect(received < 20_000, "all \(received) replies were queued for a client that did not read")
        #expect(Syscall.writeAll(fd: fd, Array(#"{"execute":"query-status","id":6}"#.utf8)))
        #expect(Self.readReplies(fd, count: 1).first?["id"]?.int64Value == 6, "the open session stopped answering")

        // qmp-shell: a command on stdin, its reply pretty-printed.
        let shell = try runCommand("/bin/sh", ["-c", "echo query-status | \"$0\" -p \"$1\"", "\(Self.venv)/bin/qmp-shell", socket], timeout: 60)
        #expect(shell.status == 0 && shell.output.contains("\"state\": \"running\""), "qmp-shell: \(shell.output)")

        // qemu.qmp: negotiation, a command, eight pipelined, an error, an event.
        let library = try runCommand(python, [Self.client, socket], timeout: 300)
        let lines = library.output.split(separator: "\n").map(String.init)
        #expect(lines.contains("negotiated hostvmm"), "\(library.output)")
        #expect(lines.contains("status running"), "\(library.output)")
        #expect(lines.contains("pipelined 8"), "\(library.output)")
        #expect(lines.contains("error CommandNotFound"), "\(library.output)")
        #expect(lines.contains { ["event powerdown", "event shutdown"].contains($0) }, "\(library.output)")
        #expect(vm.upExitCode(timeout: 180) == 0, "\(vm.postMortem())")
    }
}
