import TestSupport
import AgentProtocol
import Foundation
import LinuxSystem
import SpiceBridge
import Testing

/// Malformed and oversize agent messages from the guest side. A guest cannot
/// put them on the wire past our own agent, so the test plays a hostile guest
/// itself: it is the agent socket's peer of an in-process SpiceServer (the
/// bridge exactly as hostvmm runs it), writes garbage, goes away in the middle
/// of a 200 MiB message, and then the real guest-agent (unix mode) takes the
/// port over. A real spice-gtk client stays connected throughout and must
/// receive the next clipboard transfer intact.
// 15 minutes: the limit includes waiting for its turn at InProcessSpice.gate, behind
// X11ClipboardTests and SpiceDisplayTests, which take minutes each while the VM suites load
// both cores (a full run once exceeded 5 minutes here; alone it takes 0.3 s).
@Suite(.serialized, .timeLimit(.minutes(30))) struct HostileGuestStreamTests {
    private func chunk(_ port: UInt32, _ bytes: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        for v in [port, UInt32(bytes.count)] {
            out += [UInt8(truncatingIfNeeded: v), UInt8(truncatingIfNeeded: v >> 8),
                    UInt8(truncatingIfNeeded: v >> 16), UInt8(truncatingIfNeeded: v >> 24)]
        }
        return out + bytes
    }

    private func message(_ type: UInt32, _ payload: [UInt8], declared: Int? = nil, protocolVersion: UInt32 = 1) -> [UInt8] {
        var m: [UInt8] = []
        for v in [protocolVersion, type, 0, 0, UInt32(declared ?? payload.count)] {
            m += [UInt8(truncatingIfNeeded: v), UInt8(truncatingIfNeeded: v >> 8),
                  UInt8(truncatingIfNeeded: v >> 16), UInt8(truncatingIfNeeded: v >> 24)]
        }
        return m + payload
    }

    /// Reads what the server sends the guest until a message matches, bounded (60 s).
    private func readUntil(_ fd: Int32, _ reader: inout VDAgentReader, _ match: (VDAgentReader.Output) -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(60)
        while case let left = deadline.timeIntervalSinceNow, left > 0 {
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            // Only read when poll says so: the socket blocks, and a timed-out poll must not read.
            let ready = poll(&pfd, 1, Int32(min(left, 1) * 1000))
            if ready < 0 { return false }
            if ready == 0 { continue }
            switch Syscall.readSome(fd: fd) {
            case .data(let bytes): if reader.feed(bytes).contains(where: match) { return true }
            case .wouldBlock: continue
            case .endOfStream, .failed: return false
            }
        }
        return false
    }

    @Test func garbageFromTheGuestSideLeavesTheChannelUsable() throws {
        let dir = try TestEnvironment.temporaryDirectory("hostile-guest")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let spice = try SpiceWithAgentPort(name: "hostile-guest", agentSocket: "\(dir)/vdagent.sock", firstPort: 6010)
        defer { spice.stop() }
        let uri = spice.uri
        let agentSocket = spice.agentSocket

        // The hostile guest: announce like an agent so the client gets ready.
        let rogue = try UnixSocket.connect(path: agentSocket)
        let client = try WatchedProcess("/usr/bin/python3", [SpiceEndToEndTests.client, uri, "receive", "\(dir)/received"])
        defer { client.signal(SIGTERM); _ = client.waitForExit(timeout: 10) }
        // The client announces itself through the server; answer like an agent would.
        var reader = VDAgentReader()
        let asked = readUntil(rogue, &reader) { if case .message(.client, .announceCapabilities, _) = $0 { true } else { false } }
        try #require(asked, "the client's capabilities never reached the guest side")
        let caps: [UInt8] = [0, 0, 0, 0, 0x60, 0x05, 0x01, 0x00]  // request=0, 0x00010560
        #expect(Syscall.writeAll(fd: rogue, chunk(1, message(6, caps))))
        try #require(client.waitForLine(containing: "ready", timeout: 60) != nil, "\(client.transcript)")

        var garbage: [UInt8] = []
        garbage += chunk(7, [1, 2, 3])                                  // a port that does not exist
        garbage += chunk(1, message(4, [0, 0, 0, 0, 1, 0, 0, 0], protocolVersion: 9))  // wrong protocol
        garbage += chunk(1, message(99, [0, 0, 0, 0]))                  // unknown type
        garbage += chunk(1, message(7, [1, 2]))                         // torn grab (it crashed spice-gtk 0.42)
        garbage += chunk(2, message(HostNotice.messageType, Array("not json".utf8)))  // a bogus notice
        #expect(Syscall.writeAll(fd: rogue, garbage))

        // The same port, not reopened, still carries a clipboard transfer: the rogue
        // grabs, the client asks, the rogue answers.
        let first = Array("through the same port ✓".utf8)
        #expect(Syscall.writeAll(fd: rogue, chunk(1, message(7, [0, 0, 0, 0, 1, 0, 0, 0]))))  // GRAB clipboard, UTF8_TEXT
        let requested = readUntil(rogue, &reader) { if case .message(.client, .clipboardRequest, _) = $0 { true } else { false } }
        try #require(requested, "the client never asked for the rogue's clipboard: \(client.transcript)")
        #expect(Syscall.writeAll(fd: rogue, chunk(1, message(4, [0, 0, 0, 0, 1, 0, 0, 0] + first))))
        #expect(client.waitForLine(containing: "received", timeout: 60) != nil, "client: \(client.transcript)")
        #expect((try? Data(contentsOf: URL(fileURLWithPath: "\(dir)/received"))).map(Array.init) == first)

        // Then the guest goes away in the middle of a 200 MiB message.
        #expect(Syscall.writeAll(fd: rogue, chunk(1, message(4, [0, 0, 0, 0, 1, 0, 0, 0] + [UInt8](repeating: 0x41, count: 4000),
                                                          declared: 200 << 20))))
        close(rogue)
        let second = try WatchedProcess("/usr/bin/python3", [SpiceEndToEndTests.client, uri, "receive", "\(dir)/received2"])
        defer { second.signal(SIGTERM); _ = second.waitForExit(timeout: 10) }

        // The real agent takes the port over; the client still connected receives its clipboard.
        let agent = try WatchedProcess(TestEnvironment.guestAgent,
                                       ["-m", "unix-listen", "-p", "\(dir)/qga.sock", "-t", dir, "--spice-path", agentSocket,
                                        "--x11-display", ""],
                                       environment: ["QGA_CONF": "/dev/null"])
        defer { agent.signal(SIGTERM); _ = agent.waitForExit(timeout: 10) }
        // The second attachment: the real agent, after the rogue.
        try #require(spice.waitForAttachments(2, timeout: 20), "the agent did not connect: \(agent.transcript)")

        try #require(second.waitForLine(containing: "ready", timeout: 60) != nil, "client: \(second.transcript)")
        let text = Array("after a hostile guest ✓\n".utf8)
        let file = "\(dir)/clip"
        try Data(text).write(to: URL(fileURLWithPath: file))
        // The agent's clipboard socket appears once it runs; retry the set until it does (bounded).
        var set: (status: Int32?, output: String) = (nil, "")
        let setDeadline = Date().addingTimeInterval(20)
        repeat {
            set = try runCommand("/bin/sh", ["-c", "exec \"$0\" clipboard set --statedir \"$1\" < \"$2\"", TestEnvironment.guestAgent,
                                             dir, file], timeout: 30)
        } while set.status != 0 && Date() < setDeadline
        #expect(set.status == 0, "\(set.output)")
        #expect(second.waitForLine(containing: "received", timeout: 60) != nil,
                "client: \(second.transcript)\nagent: \(agent.transcript)")
        let received = (try? Data(contentsOf: URL(fileURLWithPath: "\(dir)/received2"))).map(Array.init) ?? []
        #expect(received == text)
    }
}
