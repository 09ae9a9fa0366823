import AgentProtocol
import Foundation
import Testing

/// A slow command must not stop the agent from answering a host that gave up
/// and resynchronised, and its late reply must not reach that host.
@Suite struct GuestAgentPipelineTests {
    @Test func resyncDuringASlowCommandIsAnsweredAtOnceAndTheLateReplyIsDropped() throws {
        let dir = try TestEnvironment.temporaryDirectory("slow")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // The fsfreeze hook is the agent's slow path here: thaw runs it and waits.
        let hook = "\(dir)/hook"
        let release = "\(dir)/release"
        try "#!/bin/sh\nwhile [ ! -e \(release) ]; do sleep 0.05; done\n".write(toFile: hook, atomically: true, encoding: .utf8)
        chmod(hook, 0o755)
        let process = try WatchedProcess(TestEnvironment.guestAgent, ["-m", "unix-listen", "-p", "\(dir)/s", "-t", dir, "-F\(hook)"],
                                         environment: ["QGA_CONF": "/dev/null"])
        defer { process.signal(SIGTERM); _ = process.waitForExit(timeout: 5) }
        #expect(process.waitForLine(containing: "listening", timeout: 10) != nil)
        let c = try AgentConnection(path: "\(dir)/s")

        c.send(#"{"execute":"guest-fsfreeze-thaw"}"#)  // blocks in the hook until `release` exists
        let start = Date()
        c.send([0xFF] + Array(#"{"execute":"guest-sync-delimited","arguments":{"id":77}}"#.utf8))
        let lines = try c.readLines(2, timeout: 5)
        #expect(Date().timeIntervalSince(start) < 5)
        #expect(String(decoding: lines[0], as: UTF8.self).contains("stray"))
        #expect(lines[1] == [0xFF] + Array(#"{"return": 77}"#.utf8))

        _ = FileManager.default.createFile(atPath: release, contents: nil)
        c.send(#"{"execute":"guest-ping","id":"after"}"#)
        // The next line is the ping's: the thaw reply belonged to the abandoned epoch.
        #expect(try c.readLineText(timeout: 10) == #"{"return": {}, "id": "after"}"#)
    }
}
