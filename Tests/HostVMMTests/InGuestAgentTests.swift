import AgentProtocol
import Foundation
import Testing

/// The QGA command set inside the real guest, through the whole chain:
/// hostvmm CLI -> control socket -> QEMU chardev -> virtio-serial -> guest-agent.
@Suite(.serialized, .timeLimit(.minutes(30))) struct InGuestAgentTests {
    private func agent(_ vm: BootedVM, _ request: String) throws -> JSONValue { try vm.agent(request) }

    @Test func execFilesNetworkFsinfoOsinfo() throws {
        let vm = try BootedVM(name: "e2e-qga")

        // guest-exec with output, polled until it exits.
        let started = try agent(vm, #"{"execute":"guest-exec","arguments":{"path":"/bin/sh","arg":["-c","echo hello; uname -r; exit 7"],"capture-output":true}}"#)
        let pid = try #require(started["return"]?["pid"]?.int64Value, "\(JSONWriter.string(started))")
        var status = JSONValue.null
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            status = try agent(vm, #"{"execute":"guest-exec-status","arguments":{"pid":\#(pid)}}"#)
            if status["return"]?["exited"] == .bool(true) { break }
        }
        #expect(status["return"]?["exitcode"] == .int(7), "\(JSONWriter.string(status))")
        let out = try Base64.decode(status["return"]?["out-data"]?.stringValue ?? "")
        let text = String(decoding: out, as: UTF8.self)
        #expect(text.hasPrefix("hello\n6.12."), "\(text)")

        // guest-file write, seek, read back, close.
        let content = "written by the host \u{2713}\n"
        let handle = try #require(try agent(vm, #"{"execute":"guest-file-open","arguments":{"path":"/tmp/roundtrip","mode":"w+"}}"#)["return"]?.int64Value)
        let wrote = try agent(vm, #"{"execute":"guest-file-write","arguments":{"handle":\#(handle),"buf-b64":"\#(Base64.encode(Array(content.utf8)))"}}"#)
        #expect(wrote["return"]?["count"] == .int(Int64(content.utf8.count)))
        _ = try agent(vm, #"{"execute":"guest-file-seek","arguments":{"handle":\#(handle),"offset":0,"whence":"set"}}"#)
        let read = try agent(vm, #"{"execute":"guest-file-read","arguments":{"handle":\#(handle),"count":1000}}"#)
        #expect(try Base64.decode(read["return"]?["buf-b64"]?.stringValue ?? "") == Array(content.utf8))
        #expect(read["return"]?["eof"] == .bool(true))
        #expect(try agent(vm, #"{"execute":"guest-file-close","arguments":{"handle":\#(handle)}}"#)["return"] == .object([:]))

        // Network: the guest has only loopback, brought up by its init.
        let interfaces = try agent(vm, #"{"execute":"guest-network-get-interfaces"}"#)["return"]?.arrayValue ?? []
        let lo = interfaces.first { $0["name"] == .string("lo") }
        let addresses = lo?["ip-addresses"]?.arrayValue?.compactMap { $0["ip-address"]?.stringValue } ?? []
        #expect(addresses.contains("127.0.0.1"), "\(interfaces)")

        // Filesystems: this guest runs from its initramfs, with no block device:
        // nothing qualifies, and the answer must say so rather than fail.
        let fsinfo = try agent(vm, #"{"execute":"guest-get-fsinfo"}"#)
        #expect(fsinfo["return"] == .array([]), "\(JSONWriter.string(fsinfo))")

        let osinfo = try agent(vm, #"{"execute":"guest-get-osinfo"}"#)["return"]
        #expect(osinfo?["id"] == .string("hostvmm-embedded"))
        #expect(osinfo?["kernel-release"]?.stringValue?.hasPrefix("6.12.") == true)
        #expect(osinfo?["machine"] == .string("x86_64"))

        let vcpus = try agent(vm, #"{"execute":"guest-get-vcpus"}"#)["return"]?.arrayValue ?? []
        #expect(vcpus.count == 2, "the VM has 2 vCPUs by default")

        // guest-set-user-password with no chpasswd in the guest: the agent writes /etc/shadow
        // itself (SHA-512 here: the guest has no login.defs), keeping the file's mode.
        let password = "correct horse: battery $1"
        let set = try agent(vm, #"{"execute":"guest-set-user-password","arguments":{"username":"root","password":"\#(Base64.encode(Array(password.utf8)))","crypted":false}}"#)
        #expect(set["return"] == .object([:]), "\(JSONWriter.string(set))")
        let hash = try ShadowCheck.hash(of: "root", in: vm.getFile("/etc/shadow"))
        #expect(hash.hasPrefix("$6$"), "\(hash)")
        #expect(try ShadowCheck.matches(password: password, hash: hash), "the hash in /etc/shadow does not verify")
        let mode = try vm.guestRun("stat -c %a /etc/shadow")
        #expect(mode.output.trimmingCharacters(in: .whitespacesAndNewlines) == "600", "\(mode.output)")
        let given = "$6$salt$hashed.by.the.host"
        let crypted = try agent(vm, #"{"execute":"guest-set-user-password","arguments":{"username":"root","password":"\#(Base64.encode(Array(given.utf8)))","crypted":true}}"#)
        #expect(crypted["return"] == .object([:]), "\(JSONWriter.string(crypted))")
        #expect(try ShadowCheck.hash(of: "root", in: vm.getFile("/etc/shadow")) == given)
        let before = try vm.getFile("/etc/shadow")
        let unknown = try agent(vm, #"{"execute":"guest-set-user-password","arguments":{"username":"nobody","password":"eA==","crypted":false}}"#)
        #expect(unknown["error"]?["desc"] == .string("failed to lookup user 'nobody'"), "\(JSONWriter.string(unknown))")
        #expect(try vm.getFile("/etc/shadow") == before, "a refused request must leave /etc/shadow as it was")

        let shutdown = try vm.cli(["shutdown", vm.name, "--mode", "agent"])
        #expect(shutdown.status == 0, "\(shutdown.output)")
        #expect(vm.upExitCode() == 0)
    }
}
