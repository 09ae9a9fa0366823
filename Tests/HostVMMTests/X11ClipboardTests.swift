import TestSupport
import AgentProtocol
import Foundation
import LinuxSystem
import SpiceBridge
import Testing

/// The X11 clipboard backend of guest-agent, without a VM: the agent runs on
/// the host against an Xvfb, its SPICE port is a unix socket served by an
/// in-process SpiceServer, and the peers are real: spice-gtk on one side,
/// xclip (an ordinary X client) on the other.
@Suite(.serialized, .timeLimit(.minutes(30))) struct X11ClipboardTests {
    static let xvfb = Xvfb.path
    static let xclip = "/usr/bin/xclip"
    static let toolsInstalled = [xvfb, xclip].allSatisfy { FileManager.default.isExecutableFile(atPath: $0) }

    /// Text of `size` bytes with multi-byte characters, deterministic.
    static func payload(_ size: Int, seed: Int = 0) -> [UInt8] {
        let words = ["alpha ", "beta ", "gamma ", "épsilon ", "ηта ", "✓\n", "x11 "]
        var out: [UInt8] = []
        out.reserveCapacity(size + 16)
        var i = seed
        while out.count < size {
            out += Array(words[i % words.count].utf8)
            i += 5
        }
        while out.count > size { out.removeLast() }
        while let last = out.last, last & 0xC0 == 0x80 || last >= 0xC0 { out.removeLast() }
        return out
    }

    static func sameBytes(_ a: [UInt8], _ b: [UInt8]) -> Bool { a == b }

    static func firstDifference(_ a: [UInt8], _ b: [UInt8]) -> Int {
        (0..<min(a.count, b.count)).first { a[$0] != b[$0] } ?? min(a.count, b.count)
    }

    @Test(.enabled(if: toolsInstalled, "Xvfb and xclip are not installed (scripts/setup.sh installs xvfb and xclip)"))
    func clipboardAndPrimaryBothWaysIncludingFiveMiB() throws {
        let env = X11Setup()
        defer { env.stop() }
        try env.start()
        let client = SpiceEndToEndTests.client

        // Client -> guest: the client grabs; an X program pastes and gets exactly the client's bytes.
        for (label, bytes) in [("small", Array("pasted from the client ✓\nline 2\n".utf8)), ("5MiB", Self.payload(5 << 20))] {
            let file = "\(env.dir)/to-guest-\(label)"
            try Data(bytes).write(to: URL(fileURLWithPath: file))
            let sender = try WatchedProcess("/usr/bin/python3", [client, env.uri, "send", file])
            defer {
                sender.signal(SIGTERM)
                _ = sender.waitForExit(timeout: 10)
            }
            try #require(sender.waitForLine(containing: "grabbed", timeout: 60) != nil, "client: \(sender.transcript)")
            let start = Date()
            let pasted = try env.pasteInGuest(selection: "clipboard", expecting: bytes, timeout: 60)
            let seconds = Date().timeIntervalSince(start)
            #expect(pasted.count == bytes.count, "\(label): xclip got \(pasted.count) of \(bytes.count) bytes\n\(env.agent.transcript)")
            // Compared as a Bool: a failed #expect on two 5 MiB arrays would spend minutes printing them.
            #expect(Self.sameBytes(pasted, bytes),
                    "\(label): the guest's clipboard differs from the client's from byte \(Self.firstDifference(pasted, bytes))")
            #expect(sender.waitForLine(containing: "served \(bytes.count)", timeout: 10) != nil, "\(sender.transcript)")
            print("x11 clipboard: client -> guest \(label) (\(bytes.count) bytes) pasted by xclip in \(String(format: "%.2f", seconds)) s")
        }

        // Guest -> client: an X program copies; the client receives exactly those bytes.
        let cases: [(label: String, selection: String, bytes: [UInt8])] = [
            ("small", "clipboard", Array("copied in the guest's X session\n".utf8)),
            ("5MiB", "clipboard", Self.payload(5 << 20, seed: 3)),
            ("primary", "primary", Array("the PRIMARY selection ✓".utf8)),
        ]
        for c in cases {
            let file = "\(env.dir)/from-guest-\(c.label)"
            let source = "\(env.dir)/source-\(c.label)"
            try Data(c.bytes).write(to: URL(fileURLWithPath: source))
            let receiver = try WatchedProcess("/usr/bin/python3", [client, env.uri, "receive", file])
            defer {
                receiver.signal(SIGTERM)
                _ = receiver.waitForExit(timeout: 10)
            }
            try #require(receiver.waitForLine(containing: "ready", timeout: 60) != nil, "client: \(receiver.transcript)")
            let start = Date()
            // -quiet keeps xclip in the foreground, serving the selection until it is stopped.
            let copier = try WatchedProcess(Self.xclip, ["-quiet", "-i", "-selection", c.selection, source],
                                            environment: ["DISPLAY": env.display])
            defer {
                copier.signal(SIGTERM)
                _ = copier.waitForExit(timeout: 10)
            }
            let got = receiver.waitForLine(containing: "received", timeout: 120)
            let seconds = Date().timeIntervalSince(start)
            #expect(got != nil, "\(c.label): client: \(receiver.transcript)\nagent: \(env.agent.transcript)")
            let received = (try? Data(contentsOf: URL(fileURLWithPath: file))).map(Array.init) ?? []
            #expect(received.count == c.bytes.count, "\(c.label): client received \(received.count) of \(c.bytes.count) bytes")
            #expect(Self.sameBytes(received, c.bytes),
                    "\(c.label): the client's bytes differ from xclip's from byte \(Self.firstDifference(received, c.bytes))")
            print("x11 clipboard: guest -> client \(c.label) (\(c.bytes.count) bytes, \(c.selection)) in \(String(format: "%.2f", seconds)) s")
        }
        #expect(env.agent.count(containing: "using X display") == 1, "\(env.agent.transcript)")
    }

    /// An agent started before its X server picks it up, and survives the server going away.
    @Test(.enabled(if: toolsInstalled, "Xvfb and xclip are not installed (scripts/setup.sh installs xvfb and xclip)"))
    func displayOpenedLateAndLostWithoutEndingTheAgent() throws {
        let dir = try TestEnvironment.temporaryDirectory("x11-late")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        guard let number = (150..<250).first(where: {
            !FileManager.default.fileExists(atPath: "/tmp/.X11-unix/X\($0)") && !FileManager.default.fileExists(atPath: "/tmp/.X\($0)-lock")
        }) else { throw TestFailure("no free X display number in 150..<250") }
        let agent = try WatchedProcess(TestEnvironment.guestAgent,
                                       ["-m", "unix-listen", "-p", "\(dir)/qga.sock", "-t", dir,
                                        "--spice-path", "\(dir)/no-spice-here", "--x11-display", ":\(number)"],
                                       environment: ["QGA_CONF": "/dev/null"])
        defer {
            agent.signal(SIGTERM)
            _ = agent.waitForExit(timeout: 10)
        }
        #expect(agent.waitForLine(containing: "cannot open X display ':\(number)'", timeout: 10) != nil, "\(agent.transcript)")

        let xvfb = try WatchedProcess(Self.xvfb, [":\(number)", "-nolisten", "tcp"])
        defer {
            xvfb.signal(SIGTERM)
            _ = xvfb.waitForExit(timeout: 10)
        }
        // The agent retries every 3 s.
        #expect(agent.waitForLine(containing: "using X display ':\(number)'", timeout: 20) != nil,
                "agent: \(agent.transcript)\nXvfb: \(xvfb.transcript)")

        xvfb.signal(SIGTERM)
        #expect(xvfb.waitForExit(timeout: 10) != nil)
        #expect(agent.waitForLine(containing: "lost X display", timeout: 10) != nil, "\(agent.transcript)")
        // Still serving its QGA side: Xlib's I/O error did not end the process.
        let c = try AgentConnection(path: "\(dir)/qga.sock")
        c.send(#"{"execute":"guest-ping"}"#)
        #expect(try c.readLineText() == #"{"return": {}}"#)
        #expect(agent.count(containing: "cannot open X display") == 1, "one line while the display is missing: \(agent.transcript)")
    }
}

/// Xvfb, a SPICE server on its own loop listening for the agent on a unix
/// socket, and guest-agent on the host in unix mode with the X11 backend.
final class X11Setup: @unchecked Sendable {
    private(set) var dir = ""
    private var xvfb: Xvfb?
    private(set) var display = ""
    private var loop: LoopThread!
    private(set) var uri = ""
    private(set) var agent: WatchedProcess!
    private var server: SpiceServer?
    private var listener: Int32 = -1
    private var listenerWatch: WatchHandle?
    private let attached = ResultBox<Bool>()
    private var holdsGate = false

    /// Starts everything; `stop()` cleans up whatever started, also after a failure here.
    func start() throws {
        // One in-process SPICE server at a time (SpiceDisplayTests has them too).
        InProcessSpice.gate.wait()
        holdsGate = true
        dir = try TestEnvironment.temporaryDirectory("x11")
        let xvfb = try Xvfb()
        self.xvfb = xvfb
        display = xvfb.display

        loop = try LoopThread()
        guard let port = SpiceServer.freePort(address: "127.0.0.1", from: 5990) else { throw TestFailure("no free port") }
        let ticket = "x11-\(UInt32.random(in: 0...UInt32.max))"
        uri = "spice://127.0.0.1?port=\(port)&password=\(ticket)"
        let agentSocket = "\(dir)/vdagent.sock"
        let made: Result<Void, Error>? = loop.onLoop(timeout: 10) { [self] finish in
            do {
                let server = try SpiceServer(config: SpiceConfig(listen: .tcp(address: "127.0.0.1", port: port),
                                                                 access: .ticket(ticket), name: "x11-test"), loop: loop.loop)
                server.setRunning(true)
                self.server = server
                listener = try UnixSocket.listen(path: agentSocket)
                listenerWatch = try loop.loop.watch(fd: listener, events: .read) { [self] _ in
                    guard let fd = try? UnixSocket.accept(listener) else { return }
                    self.server?.attachAgent(fd: fd, loop: loop.loop)
                    attached.set(true)
                }
                finish(.success(()))
            } catch {
                finish(.failure(error))
            }
        }
        if case .failure(let error)? = made { throw TestFailure("SPICE server: \(error)") }
        guard made != nil else { throw TestFailure("the SPICE server did not start within 10 s") }

        agent = try WatchedProcess(TestEnvironment.guestAgent,
                                   ["-m", "unix-listen", "-p", "\(dir)/qga.sock", "-t", dir, "--spice-path", agentSocket,
                                    "--x11-display", display],
                                   environment: ["QGA_CONF": "/dev/null"])
        guard agent.waitForLine(containing: "using X display", timeout: 20) != nil else {
            throw TestFailure("guest-agent did not open \(display): \(agent.transcript)")
        }
        guard attached.wait(timeout: 20) == true else {
            throw TestFailure("guest-agent did not connect to the SPICE agent socket: \(agent.transcript)")
        }
    }

    /// Runs `xclip -o` until it returns `expected` (the grab reaches the X
    /// server asynchronously), bounded; returns what the last paste gave.
    func pasteInGuest(selection: String, expecting expected: [UInt8], timeout: TimeInterval) throws -> [UInt8] {
        let out = "\(dir)/pasted"
        let deadline = Date().addingTimeInterval(timeout)
        var last: [UInt8] = []
        while Date() < deadline {
            try? FileManager.default.removeItem(atPath: out)
            let r = try runCommand("/bin/sh", ["-c", "exec \"$0\" -o -selection \"$1\" > \"$2\"", X11ClipboardTests.xclip,
                                               selection, out],
                                   environment: ["DISPLAY": display], timeout: 60)
            last = (try? Data(contentsOf: URL(fileURLWithPath: out))).map(Array.init) ?? []
            if r.status == 0 && last == expected { return last }
            if r.status == nil { throw TestFailure("xclip -o did not finish within 60 s") }
        }
        return last
    }

    func stop() {
        if let agent {
            agent.signal(SIGTERM)
            _ = agent.waitForExit(timeout: 10)
        }
        if let loop {
            loop.sync { [self] in
                if let listenerWatch { loop.loop.remove(listenerWatch) }
                if listener >= 0 { close(listener) }
                server?.detachAgent()
                server = nil
            }
            loop.stop()
        }
        xvfb?.stop()
        if !dir.isEmpty { try? FileManager.default.removeItem(atPath: dir) }
        if holdsGate {
            holdsGate = false
            InProcessSpice.gate.signal()
        }
    }
}
