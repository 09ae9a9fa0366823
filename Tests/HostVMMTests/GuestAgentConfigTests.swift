import Foundation
import Testing

/// qemu-ga's options and config file, read by the guest-agent binary.
@Suite struct GuestAgentConfigTests {
    private func agent(_ args: [String], environment: [String: String] = [:]) throws -> (status: Int32?, output: String) {
        try runCommand(TestEnvironment.guestAgent, args, environment: environment, timeout: 10)
    }

    @Test func dumpConfShowsOptionsAsAConfigFile() throws {
        let r = try agent(["-m", "unix-listen", "-p", "/tmp/x.sock", "-t", "/tmp", "-b", "guest-ping,guest-get-time",
                           "-F/etc/hook", "-D"], environment: ["QGA_CONF": "/dev/null"])
        #expect(r.status == 0)
        let lines = Set(r.output.split(separator: "\n").map(String.init))
        for expected in ["[general]", "method=unix-listen", "path=/tmp/x.sock", "statedir=/tmp",
                         "block-rpcs=guest-ping;guest-get-time", "fsfreeze-hook=/etc/hook", "allow-rpcs="] {
            #expect(lines.contains(expected), "missing \(expected) in:\n\(r.output)")
        }
    }

    @Test func configFileIsReadAndOptionsOverrideIt() throws {
        let dir = try TestEnvironment.temporaryDirectory("conf")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let conf = "\(dir)/qemu-ga.conf"
        try "[general]\nmethod=unix-listen\npath=\(dir)/a.sock\nallow-rpcs=guest-ping;guest-info\nverbose=true\n"
            .write(toFile: conf, atomically: true, encoding: .utf8)
        let fromFile = try agent(["-c", conf, "-D"])
        #expect(fromFile.output.contains("path=\(dir)/a.sock"))
        #expect(fromFile.output.contains("allow-rpcs=guest-ping;guest-info"))
        #expect(fromFile.output.contains("verbose=true"))
        let overridden = try agent(["-D", "-p", "\(dir)/b.sock"], environment: ["QGA_CONF": conf])
        #expect(overridden.output.contains("path=\(dir)/b.sock"))
    }

    @Test func x11DisplayComesFromDISPLAYTheConfigFileOrTheOption() throws {
        let dir = try TestEnvironment.temporaryDirectory("conf")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let fromEnv = try agent(["-D"], environment: ["QGA_CONF": "/dev/null", "DISPLAY": ":7"])
        #expect(fromEnv.output.split(separator: "\n").contains("x11-display=:7"), "\(fromEnv.output)")
        let conf = "\(dir)/qemu-ga.conf"
        try "[general]\nx11-display=:3\n".write(toFile: conf, atomically: true, encoding: .utf8)
        let fromFile = try agent(["-c", conf, "-D"], environment: ["DISPLAY": ":7"])
        #expect(fromFile.output.split(separator: "\n").contains("x11-display=:3"), "\(fromFile.output)")
        let fromOption = try agent(["-c", conf, "--x11-display=:9", "-D"], environment: ["DISPLAY": ":7"])
        #expect(fromOption.output.split(separator: "\n").contains("x11-display=:9"), "\(fromOption.output)")
        // Empty: the headless clipboard even with $DISPLAY set.
        let headless = try agent(["--x11-display=", "-D"], environment: ["QGA_CONF": "/dev/null", "DISPLAY": ":7"])
        #expect(headless.output.split(separator: "\n").contains("x11-display="), "\(headless.output)")
        #expect(try agent(["--help"]).output.contains("--x11-display=DISPLAY"))
    }

    @Test func badConfigurationIsAClearError() throws {
        let dir = try TestEnvironment.temporaryDirectory("conf")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try "[general]\nmethod=carrier-pigeon\n".write(toFile: "\(dir)/bad.conf", atomically: true, encoding: .utf8)
        for (args, text) in [(["-c", "\(dir)/bad.conf"], "unsupported method"), (["-c", "\(dir)/missing.conf"], "cannot read"),
                             (["--bogus"], "unknown option"), (["-m", "unix-listen"], "needs -p"), (["-t", "relative"], "absolute")] {
            let r = try agent(args, environment: ["QGA_CONF": "/dev/null"])
            #expect(r.status == 1, "\(args)")
            #expect(r.output.contains(text), "\(args): \(r.output)")
        }
    }

    @Test func allowAndBlockListsDisableCommandsLikeQemuGA() throws {
        let dir = try TestEnvironment.temporaryDirectory("rpcs")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // Both lists at once: qemu-ga 10 applies the allow list, then the block list.
        let process = try WatchedProcess(TestEnvironment.guestAgent, [
            "-m", "unix-listen", "-p", "\(dir)/s", "-t", dir, "-a", "guest-ping,guest-info,guest-get-time", "-b", "guest-get-time",
        ], environment: ["QGA_CONF": "/dev/null"])
        defer { process.signal(SIGTERM); _ = process.waitForExit(timeout: 5) }
        #expect(process.waitForLine(containing: "listening", timeout: 10) != nil)
        let c = try AgentConnection(path: "\(dir)/s")
        c.send(#"{"execute":"guest-get-time"}{"execute":"guest-get-osinfo"}{"execute":"guest-ping"}"#)
        let lines = try c.readLines(3).map { String(decoding: $0, as: UTF8.self) }
        #expect(lines[0].contains("Command guest-get-time has been disabled: the command is not allowed"))
        #expect(lines[1].contains("Command guest-get-osinfo has been disabled"))
        #expect(lines[2] == #"{"return": {}}"#)
    }

    @Test func helpListsCommands() throws {
        let r = try agent(["-b", "help"], environment: ["QGA_CONF": "/dev/null"])
        #expect(r.status == 0)
        #expect(r.output.contains("guest-exec-status"))
    }
}
