import AgentProtocol
import Foundation
import LinuxSystem
import SpiceBridge
import TestSupport
import Testing

/// Debian's own SPICE agent against hostvmm's SPICE bridge (issue #15): spice-vdagentd and
/// spice-vdagent run on the host under Xvfb, joined to an in-process SpiceServer's agent
/// channel the way HostileGuestStreamTests join it (spice-vdagentd's -s names a UNIX socket
/// it connects to when it cannot open a device; the test accepts it and attaches it as the
/// guest's com.redhat.spice.0). A real spice-gtk client copies and pastes both ways and
/// sends a monitors config, which spice-vdagentd must accept (it rejects spice-gtk's
/// unrewritten one: MonitorsConfigRewriter).
@Suite(.serialized, .timeLimit(.minutes(30))) struct SpiceVDAgentTests {
    static let daemon = "/usr/sbin/spice-vdagentd"
    static let sessionAgent = "/usr/bin/spice-vdagent"
    static let installed = [daemon, sessionAgent, Xvfb.path, X11ClipboardTests.xclip].allSatisfy {
        FileManager.default.isExecutableFile(atPath: $0)
    }

    @Test(.enabled(if: installed, "spice-vdagent, Xvfb and xclip are needed (scripts/setup.sh installs them)"))
    func debianSpiceVDAgentCopiesBothWaysAndAcceptsMonitorsConfig() throws {
        let dir = try TestEnvironment.temporaryDirectory("vdagent")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let spice = try SpiceWithAgentPort(name: "stock-vdagent", agentSocket: "\(dir)/spice-port.sock", firstPort: 6040)
        defer { spice.stop() }
        let uri = spice.uri
        let agentSocket = spice.agentSocket

        let x = try Xvfb(screen: "1024x768x24")
        defer { x.stop() }
        // -x foreground, -X no logind (the first session agent is the active one), -f with
        // a regular file as uinput: mouse events are written there, no kernel device needed.
        let uinput = "\(dir)/uinput"
        try #require(FileManager.default.createFile(atPath: uinput, contents: nil), "cannot create \(uinput)")
        let vdagentd = try WatchedProcess(Self.daemon, ["-x", "-X", "-d", "-f", "-u", uinput, "-s", agentSocket,
                                                         "-S", "\(dir)/vdagentd.sock"])
        defer { vdagentd.signal(SIGTERM); _ = vdagentd.waitForExit(timeout: 10) }
        let socketUp = waitUntil(timeout: 20) { FileManager.default.fileExists(atPath: "\(dir)/vdagentd.sock") }
        try #require(socketUp, "spice-vdagentd did not listen: \(vdagentd.transcript)")
        let vdagent = try WatchedProcess(Self.sessionAgent, ["-x", "-d", "-s", agentSocket, "-S", "\(dir)/vdagentd.sock"],
                                         environment: ["DISPLAY": x.display])
        defer { vdagent.signal(SIGTERM); _ = vdagent.waitForExit(timeout: 10) }
        let logs = { "spice-vdagentd:\n\(vdagentd.transcript)\nspice-vdagent:\n\(vdagent.transcript)" }
        // spice-vdagentd opens the port once the session agent has told it the X resolution.
        try #require(spice.waitForAttachments(1, timeout: 60), "spice-vdagentd never connected to the agent port:\n\(logs())")

        // Guest -> client: an X client copies; spice-vdagent grabs; the client fetches.
        let receiver = try WatchedProcess("/usr/bin/python3", [SpiceEndToEndTests.client, uri, "receive", "\(dir)/received"])
        defer { receiver.signal(SIGTERM); _ = receiver.waitForExit(timeout: 10) }
        try #require(receiver.waitForLine(containing: "ready", timeout: 60) != nil, "client: \(receiver.transcript)\n\(logs())")
        let fromGuest = "copied in the guest by xclip ✓"
        try fromGuest.write(toFile: "\(dir)/guest-text", atomically: true, encoding: .utf8)
        let copier = try WatchedProcess(X11ClipboardTests.xclip, ["-quiet", "-i", "-selection", "clipboard", "\(dir)/guest-text"],
                                        environment: ["DISPLAY": x.display])
        defer { copier.signal(SIGTERM); _ = copier.waitForExit(timeout: 10) }
        #expect(receiver.waitForLine(containing: "received", timeout: 60) != nil, "client: \(receiver.transcript)\n\(logs())")
        #expect((try? String(contentsOfFile: "\(dir)/received", encoding: .utf8)) == fromGuest)
        receiver.signal(SIGTERM)
        _ = receiver.waitForExit(timeout: 10)

        // Client -> guest: the client grabs; xclip in the guest's X session pastes it.
        let fromClient = "pasted from the SPICE client ✓"
        try fromClient.write(toFile: "\(dir)/client-text", atomically: true, encoding: .utf8)
        let sender = try WatchedProcess("/usr/bin/python3", [SpiceEndToEndTests.client, uri, "send", "\(dir)/client-text"])
        defer { sender.signal(SIGTERM); _ = sender.waitForExit(timeout: 10) }
        try #require(sender.waitForLine(containing: "grabbed", timeout: 60) != nil, "client: \(sender.transcript)\n\(logs())")
        var pasted = ""
        let gotPaste = try waitUntil(timeout: 60, interval: 0.5) {
            pasted = try runCommand(X11ClipboardTests.xclip, ["-o", "-selection", "clipboard"], environment: ["DISPLAY": x.display],
                                    timeout: 20).output
            return pasted == fromClient
        }
        #expect(gotPaste, "xclip pasted \(pasted.debugDescription)\nclient: \(sender.transcript)\n\(logs())")
        sender.signal(SIGTERM)
        _ = sender.waitForExit(timeout: 10)

        // A window size from the client: spice-vdagentd accepts the (rewritten) monitors
        // config and hands it to spice-vdagent, which sets the X screen's mode.
        let monitors = try WatchedProcess("/usr/bin/python3", [TestEnvironment.spiceDevicesClient, uri, "monitors", "800", "600"])
        defer { monitors.signal(SIGTERM); _ = monitors.waitForExit(timeout: 10) }
        // spice-vdagent -d logs "monitor 0, config 800x600+0+0" for a config it takes.
        let applied = vdagent.waitForLine(timeout: 60) { $0.contains("monitor 0, config 800x600+0+0") }
        #expect(applied != nil, "spice-vdagent never got the 800x600 monitor:\n\(logs())\nclient: \(monitors.transcript)")
        #expect(!logs().contains("invalid message size"), "spice-vdagentd refused the monitors config:\n\(logs())")
    }
}
