import AgentProtocol
import Foundation
import Testing
import TestSupport

/// Debian's own qemu-ga as the embedded guest's agent (issue #15): what a person's guest
/// runs instead of ours. The image gives it what it runs in a distribution (/sbin/shutdown,
/// chpasswd, hwclock); hostvmm's host side must serve it as it serves ours.
@Suite(.serialized, .timeLimit(.minutes(30))) struct StockAgentTests {
    @Test func debianQemuGuestAgentAnswersSetsAPasswordAndShutsTheGuestDown() throws {
        let qemuGA = "/usr/sbin/qemu-ga"
        try #require(FileManager.default.isExecutableFile(atPath: qemuGA), "Debian's qemu-guest-agent is not installed (scripts/setup.sh)")
        let vm = try BootedVM(name: "stock-qga", options: ["--agent", qemuGA])

        let ping = try vm.cli(["ping", vm.name])
        #expect(ping.status == 0, "\(ping.output)")
        let info = try vm.agent(#"{"execute":"guest-info"}"#)
        #expect(info["return"]?["version"]?.stringValue?.hasPrefix("10.") == true, "\(JSONWriter.string(info))")

        // guest-set-time with no time: qemu-ga runs `hwclock -s` (busybox's, from the RTC).
        let setTime = try vm.agent(#"{"execute":"guest-set-time"}"#)
        #expect(setTime["return"] == .object([:]), "\(JSONWriter.string(setTime))")

        // guest-set-user-password: qemu-ga pipes "root:PASSWORD" into the image's chpasswd.
        let password = "stock agent: pa$$ word"
        let set = try vm.agent(#"{"execute":"guest-set-user-password","arguments":{"username":"root","password":"\#(Base64.encode(Array(password.utf8)))","crypted":false}}"#)
        #expect(set["return"] == .object([:]), "\(JSONWriter.string(set))")
        let hash = try ShadowCheck.hash(of: "root", in: vm.getFile("/etc/shadow"))
        #expect(hash.hasPrefix("$6$"), "chpasswd writes SHA-512: \(hash)")
        #expect(try ShadowCheck.matches(password: password, hash: hash), "the hash in /etc/shadow does not verify")
        let unknown = try vm.agent(#"{"execute":"guest-set-user-password","arguments":{"username":"nobody","password":"eA==","crypted":false}}"#)
        #expect(unknown["error"] != nil, "an unknown user must fail: \(JSONWriter.string(unknown))")

        // shutdown --mode agent: qemu-ga runs /sbin/shutdown -P +0 "hypervisor initiated shutdown".
        let shutdown = try vm.cli(["shutdown", vm.name, "--mode", "agent"])
        #expect(shutdown.status == 0, "\(shutdown.output)")
        #expect(vm.upExitCode() == 0, "the guest did not power off:\n\(vm.postMortem())")
    }
}

/// Checks /etc/shadow entries with the host's libcrypt (Python's crypt module over libxcrypt).
enum ShadowCheck {
    static func hash(of user: String, in shadow: [UInt8]) throws -> String {
        for line in String(decoding: shadow, as: UTF8.self).split(separator: "\n") {
            let fields = line.split(separator: ":", omittingEmptySubsequences: false)
            if fields.count >= 2, fields[0] == user { return String(fields[1]) }
        }
        throw TestFailure("no /etc/shadow line for \(user)")
    }

    static func matches(password: String, hash: String) throws -> Bool {
        let check = "import crypt, sys; sys.exit(0 if crypt.crypt(sys.argv[1], sys.argv[2]) == sys.argv[2] else 1)"
        let result = try runCommand("/usr/bin/python3", ["-W", "ignore", "-c", check, password, hash])
        guard let status = result.status, status <= 1 else { throw TestFailure("python3 crypt check failed: \(result.output)") }
        return status == 0
    }
}
