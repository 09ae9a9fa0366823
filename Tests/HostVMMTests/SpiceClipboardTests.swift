import AgentProtocol
import Foundation
import LinuxSystem
import Testing

/// Copy and paste between a real SPICE client (spice-gtk) and the guest's
/// headless clipboard, through hostvmm's SPICE server and our guest agent.
@Suite(.serialized, .timeLimit(.minutes(10))) struct SpiceClipboardTests {
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

    /// Text of `size` bytes with multi-byte characters, deterministic.
    private func payload(_ size: Int) -> [UInt8] {
        let words = ["alpha ", "beta ", "gamma ", "épsilon ", "ηта ", "✓\n"]
        var out: [UInt8] = []
        var i = 0
        while out.count < size {
            out += Array(words[i % words.count].utf8)
            i += 7
        }
        while out.count > size { out.removeLast() }
        // Never end inside a multi-byte character.
        while let last = out.last, last & 0xC0 == 0x80 || last >= 0xC0 { out.removeLast() }
        return out
    }

    @Test func copyAndPasteBothWaysIncludingFiveMiB() throws {
        let vm = try BootedVM(name: "e2e-clip")
        #expect(vm.waitForOccurrence("spice-agent-connected", count: 1, timeout: 60), "\(vm.up.transcript)")
        let uri = try vm.cli(["spice", vm.name]).output.trimmingCharacters(in: .whitespacesAndNewlines)
        let dir = try TestEnvironment.temporaryDirectory("clip")
        defer { try? FileManager.default.removeItem(atPath: dir) }

        // Client -> guest: small text, then 5 MiB.
        for (label, bytes) in [("small", Array("pasted from the client ✓\n".utf8)), ("5MiB", payload(5 << 20))] {
            let file = "\(dir)/to-guest-\(label)"
            try Data(bytes).write(to: URL(fileURLWithPath: file))
            let sender = try WatchedProcess("/usr/bin/python3", [Self.client, uri, "send", file])
            defer { sender.signal(SIGTERM); _ = sender.waitForExit(timeout: 10) }
            #expect(sender.waitForLine(containing: "served", timeout: 60) != nil, "\(sender.transcript)")
            let size = try waitForGuestClipboard(vm, command: "/sbin/guest-agent clipboard get | wc -c", timeout: 120) {
                $0.trimmingCharacters(in: .whitespacesAndNewlines) == "\(bytes.count)"
            }
            #expect(size.trimmingCharacters(in: .whitespacesAndNewlines) == "\(bytes.count)", "\(label): guest holds \(size) bytes")
            let guestSum = try vm.guestRun("/sbin/guest-agent clipboard get | sha256sum").output
            #expect(guestSum.hasPrefix(try sha256(file)), "\(label): the guest's clipboard differs")
        }

        // Guest -> client: small text, then 5 MiB.
        for (label, bytes) in [("small", Array("copied in the guest\n".utf8)), ("5MiB", payload(5 << 20))] {
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

        _ = try vm.cli(["down", vm.name])
        #expect(vm.upExitCode() == 0)
    }
}
