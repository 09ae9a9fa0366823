import AgentProtocol
import Foundation
import LinuxSystem
import Testing

/// Copy and paste between a real SPICE client (spice-gtk) and the guest's
/// headless clipboard, through hostvmm's SPICE server and our guest agent.
@Suite(.serialized, .timeLimit(.minutes(30))) struct SpiceClipboardTests {
    static let client = SpiceEndToEndTests.client

    private func sha256(_ path: String) throws -> String {
        String(try runCommand("/usr/bin/sha256sum", [path]).output.prefix(64))
    }

    /// The guest's clipboard, once it matches `check` (bounded).
    private func waitForGuestClipboard(_ vm: BootedVM, command: String, timeout: TimeInterval,
                                       _ check: (String) -> Bool) throws -> String
    {
        let deadline = Date().addingTimeInterval(timeout)
        var last = ""
        while Date() < deadline {
            last = try vm.guestRun(command).output
            if check(last) { return last }
        }
        return last
    }

    /// The client grabs its clipboard with `bytes`; the guest's clipboard must end up holding exactly them.
    private func clientToGuest(_ vm: BootedVM, uri: String, _ bytes: [UInt8], label: String, dir: String) throws {
        let file = "\(dir)/to-guest-\(label)"
        try Data(bytes).write(to: URL(fileURLWithPath: file))
        let sender = try WatchedProcess("/usr/bin/python3", [Self.client, uri, "send", file])
        defer { sender.signal(SIGTERM); _ = sender.waitForExit(timeout: 10) }
        #expect(sender.waitForLine(containing: "served", timeout: 60) != nil, "\(sender.transcript)")
        let size = try waitForGuestClipboard(vm, command: "/sbin/guest-agent clipboard get | wc -c", timeout: 120) {
            $0.trimmingCharacters(in: .whitespacesAndNewlines) == "\(bytes.count)"
        }
        let held = size.trimmingCharacters(in: .whitespacesAndNewlines)
        if held != "\(bytes.count)" {
            let console = (try? vm.cli(["console", vm.name]).output) ?? ""
            Issue.record("\(label): guest holds \(held) of \(bytes.count) bytes; console:\n\(console)\n\(sender.transcript)")
        }
        let guestSum = try vm.guestRun("/sbin/guest-agent clipboard get | sha256sum").output
        #expect(guestSum.hasPrefix(try sha256(file)), "\(label): the guest's clipboard differs")
    }

    /// The guest sets its clipboard to `bytes`; the client must receive exactly them.
    private func guestToClient(_ vm: BootedVM, uri: String, _ bytes: [UInt8], label: String, dir: String) throws {
        try vm.putFile("/tmp/clip-\(label)", bytes)
        let out = "\(dir)/from-guest-\(label)"
        let receiver = try WatchedProcess("/usr/bin/python3", [Self.client, uri, "receive", out])
        defer { receiver.signal(SIGTERM); _ = receiver.waitForExit(timeout: 10) }
        #expect(receiver.waitForLine(containing: "ready", timeout: 60) != nil, "\(receiver.transcript)")
        #expect(try vm.guestRun("/sbin/guest-agent clipboard set < /tmp/clip-\(label)").code == 0)
        #expect(receiver.waitForLine(containing: "received", timeout: 120) != nil, "\(receiver.transcript)")
        let received = try Data(contentsOf: URL(fileURLWithPath: out))
        #expect(Array(received) == bytes, "\(label): client received \(received.count) of \(bytes.count) bytes")
    }

    @Test func copyAndPasteBothWaysIncludingFiveMiB() throws {
        let vm = try BootedVM(name: "e2e-clip")
        #expect(vm.waitForOccurrence("spice-agent-connected", count: 1, timeout: 60), "\(vm.up.transcript)")
        let uri = try vm.cli(["spice", vm.name]).output.trimmingCharacters(in: .whitespacesAndNewlines)
        let dir = try TestEnvironment.temporaryDirectory("clip")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for (label, bytes) in [("small", Array("pasted from the client ✓\n".utf8)), ("5MiB", X11ClipboardTests.payload(5 << 20))] {
            try clientToGuest(vm, uri: uri, bytes, label: label, dir: dir)
        }
        for (label, bytes) in [("small", Array("copied in the guest\n".utf8)), ("5MiB", X11ClipboardTests.payload(5 << 20))] {
            try guestToClient(vm, uri: uri, bytes, label: label, dir: dir)
        }
        _ = try vm.cli(["down", vm.name])
        #expect(vm.upExitCode() == 0)
    }

    static let hostileClient = "\(TestEnvironment.packageRoot)/Tests/HostVMMTests/Clients/spice_hostile_agent.py"

    /// Malformed and oversize messages from a client, and a client vanishing in
    /// the middle of a 200 MiB message: the agent drops them, the channel stays
    /// up, and the next client copies and pastes both ways.
    @Test func hostileClientMessagesDoNotBreakTheChannel() throws {
        let vm = try BootedVM(name: "e2e-hostile")
        #expect(vm.waitForOccurrence("spice-agent-connected", count: 1, timeout: 60), "\(vm.up.transcript)")
        let uri = try vm.cli(["spice", vm.name]).output.trimmingCharacters(in: .whitespacesAndNewlines)
        let dir = try TestEnvironment.temporaryDirectory("hostile")
        defer { try? FileManager.default.removeItem(atPath: dir) }

        let hostile = try WatchedProcess("/usr/bin/python3", [Self.hostileClient, uri])
        #expect(hostile.waitForLine(containing: "disconnected", timeout: 60) != nil, "\(hostile.transcript)")
        #expect(hostile.exitCode(timeout: 10) == 0, "\(hostile.transcript)")
        #expect(vm.waitForOccurrence("spice-client-disconnected", count: 1, timeout: 30), "\(vm.up.transcript)")

        // The agent saw each message and said why it dropped it (its log is the guest console).
        let expected = ["unknown message type 99", "dropped clipboardGrab", "dropped clipboardRequest",
                        "exceeds the 104857600-byte limit"]
        let deadline = Date().addingTimeInterval(60)
        var console = ""
        while Date() < deadline {
            // No event for a log line: poll the console file, bounded.
            console = try vm.cli(["console", vm.name]).output
            if expected.allSatisfy({ console.contains($0) }) { break }
            Thread.sleep(forTimeInterval: 0.5)
        }
        for text in expected { #expect(console.contains(text), "guest console lacks \"\(text)\":\n\(console)\n\(vm.up.transcript)") }

        try clientToGuest(vm, uri: uri, Array("after the hostile client\n".utf8), label: "after", dir: dir)
        try guestToClient(vm, uri: uri, Array("and back\n".utf8), label: "after", dir: dir)
        #expect(vm.events(named: "spice-agent-disconnected").isEmpty, "the agent channel went down: \(vm.up.transcript)")
        _ = try vm.cli(["down", vm.name])
        #expect(vm.upExitCode() == 0)
    }
}
