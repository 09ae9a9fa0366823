import AgentProtocol
import Foundation
import TestSupport
import Testing

/// libvirt drives our agent (issue #15): Debian backports' libvirt 11 (libvirtd and virtlogd
/// started here when not running) runs a type='qemu' domain booting a Debian disk through
/// SeaBIOS (the desktop image's root behind MBR + syslinux; its guest-agent starts from udev
/// when the org.qemu.guest_agent.0 channel appears), and virsh's agent commands each pass.
/// hostvmm is not in this picture: libvirt is the VMM, our agent is what it talks to.
@Suite(.serialized, .timeLimit(.minutes(30))) struct LibvirtAgentTests {
    static let virsh = "/usr/bin/virsh"
    /// libvirt's QEMU runs as libvirt-qemu, which must reach the disk: libvirt's own images
    /// directory rather than a 0700 test directory.
    static let imagesDir = "/var/lib/libvirt/images"

    /// The daemons: when this test starts them it stops them at the end.
    final class Daemons {
        var started: [String] = []

        init(in dir: String) throws {
            if (try? runCommand(LibvirtAgentTests.virsh, ["-c", "qemu:///system", "version"], timeout: 30))?.status == 0 { return }
            for daemon in ["virtlogd", "libvirtd"] {
                let pidFile = "\(dir)/\(daemon).pid"
                let r = try runCommand("/usr/sbin/\(daemon)", ["-d", "-p", pidFile], timeout: 30)
                guard r.status == 0 else { throw TestFailure("\(daemon) -d: \(r.output) (scripts/setup.sh installs libvirt)") }
                started.append(pidFile)
            }
            let up = try waitUntil(timeout: 60, interval: 0.2) {
                try runCommand(LibvirtAgentTests.virsh, ["-c", "qemu:///system", "version"], timeout: 30).status == 0
            }
            guard up else { throw TestFailure("libvirtd started but virsh cannot connect within 60 s") }
        }

        /// SIGTERM to what this test started, and a bounded wait for each to end (virtlogd
        /// still writes the console log while it goes). A daemon's parent is not this process,
        /// so an ended one may linger as a zombie: that counts as ended.
        func stop() {
            for pidFile in started.reversed() {
                guard let text = try? String(contentsOfFile: pidFile, encoding: .utf8),
                      let pid = pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines)) else { continue }
                kill(pid, SIGTERM)
                _ = waitUntil(timeout: 10, interval: 0.1) {
                    guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return true }
                    return status.contains("State:\tZ")
                }
            }
            started = []
        }
    }

    static func virsh(_ args: [String], timeout: TimeInterval = 120) throws -> (status: Int32?, output: String) {
        try runCommand(virsh, ["-c", "qemu:///system"] + args, timeout: timeout)
    }

    static func domainXML(name: String, disk: String, console: String) -> String {
        """
        <domain type='qemu'>
          <name>\(name)</name>
          <memory unit='MiB'>1024</memory>
          <vcpu>2</vcpu>
          <os><type arch='x86_64' machine='q35'>hvm</type><boot dev='hd'/></os>
          <features><acpi/></features>
          <cpu mode='maximum'/>
          <on_poweroff>destroy</on_poweroff>
          <devices>
            <emulator>/usr/bin/qemu-system-x86_64</emulator>
            <disk type='file' device='disk'>
              <driver name='qemu' type='raw'/>
              <source file='\(disk)'/>
              <target dev='vda' bus='virtio'/>
            </disk>
            <interface type='user'><model type='virtio'/></interface>
            <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>
            <serial type='file'><source path='\(console)'/></serial>
          </devices>
        </domain>
        """
    }

    /// A guest file through `virsh qemu-agent-command` (guest-file-open/read/close).
    static func readGuestFile(_ domain: String, _ path: String) throws -> [UInt8] {
        func command(_ json: String) throws -> JSONValue {
            let r = try virsh(["qemu-agent-command", domain, json])
            guard r.status == 0, let reply = try? JSONParser.parse(r.output) else { throw TestFailure("\(json): \(r.output)") }
            return reply
        }
        guard let handle = try command(#"{"execute":"guest-file-open","arguments":{"path":"\#(path)"}}"#)["return"]?.int64Value else {
            throw TestFailure("guest-file-open \(path)")
        }
        let read = try command(#"{"execute":"guest-file-read","arguments":{"handle":\#(handle),"count":65536}}"#)
        _ = try command(#"{"execute":"guest-file-close","arguments":{"handle":\#(handle)}}"#)
        return try Base64.decode(read["return"]?["buf-b64"]?.stringValue ?? "")
    }

    @Test func virshAgentCommandsPassAgainstOurAgentInADebianDisk() throws {
        try #require(FileManager.default.isExecutableFile(atPath: Self.virsh), "virsh is not installed (scripts/setup.sh)")
        let dir = "\(Self.imagesDir)/hostvmm-test-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let disk = try DiskBootTests.makeDisk("bios", in: dir, distribution: true)
        let daemons = try Daemons(in: dir)
        defer { daemons.stop(); try? FileManager.default.removeItem(atPath: dir) }
        let domain = "hostvmm-virsh-\(getpid())"
        let xml = "\(dir)/domain.xml"
        try Self.domainXML(name: domain, disk: disk, console: "\(dir)/console.log").write(toFile: xml, atomically: true, encoding: .utf8)

        try BootedVM.exclusively {
            let created = try Self.virsh(["create", xml])
            try #require(created.status == 0, "virsh create: \(created.output)")
            defer { _ = try? Self.virsh(["destroy", domain]) }
            let console = { (try? String(contentsOfFile: "\(dir)/console.log", encoding: .utf8).suffix(3000)).map(String.init) ?? "" }

            // Agent up: libvirt's guest-sync handshake, then guest-ping, as virsh sends them.
            let ready = try waitUntil(timeout: 300, interval: 2) {
                try Self.virsh(["qemu-agent-command", domain, #"{"execute":"guest-ping"}"#, "--timeout", "5"]).status == 0
            }
            try #require(ready, "the agent did not answer libvirt within 300 s; console:\n\(console())")
            let info = try Self.virsh(["qemu-agent-command", domain, #"{"execute":"guest-info"}"#])
            #expect(info.output.contains(#""version":"0.2.0""#), "not our agent: \(info.output)")

            // guestinfo, one flag at a time: with a flag, an unsupported command is an error.
            let expected = ["--os": "os.id               : debian", "--timezone": "timezone.offset", "--hostname": "hostname            : desktop",
                            "--interface": "if.1.name", "--filesystem": "fs.0.mountpoint     : /", "--user": "user.count"]
            for (flag, text) in expected.sorted(by: { $0.key < $1.key }) {
                let r = try Self.virsh(["guestinfo", domain, flag])
                #expect(r.status == 0 && r.output.contains(text), "guestinfo \(flag): \(r.output)")
            }
            let vcpus = try Self.virsh(["guestvcpus", domain])
            #expect(vcpus.status == 0 && vcpus.output.contains("online         : 0-1"), "guestvcpus: \(vcpus.output)")
            let time = try Self.virsh(["domtime", domain])
            #expect(time.status == 0 && time.output.contains("Time:"), "domtime: \(time.output)")
            let setTime = try Self.virsh(["domtime", domain, "--now"])
            #expect(setTime.status == 0, "domtime --now: \(setTime.output)")
            let fsinfo = try Self.virsh(["domfsinfo", domain])
            #expect(fsinfo.status == 0 && fsinfo.output.contains("vda2") && fsinfo.output.contains("ext4"), "domfsinfo: \(fsinfo.output)")
            // The desktop guest asks DHCP (systemd-networkd) at boot; libvirt's user network answers.
            var addresses = ""
            _ = try waitUntil(timeout: 60, interval: 1) {
                addresses = try Self.virsh(["domifaddr", domain, "--source", "agent"]).output
                return addresses.contains("10.0.2.15/24")
            }
            #expect(addresses.contains("10.0.2.15/24"), "domifaddr --source agent: \(addresses)")

            let password = "set by virsh: 1 $"
            let set = try Self.virsh(["set-user-password", domain, "root", password])
            #expect(set.status == 0, "set-user-password: \(set.output)")
            let hash = try ShadowCheck.hash(of: "root", in: Self.readGuestFile(domain, "/etc/shadow"))
            #expect(try ShadowCheck.matches(password: password, hash: hash), "the new hash does not verify: \(hash)")
            let given = "$6$virsh$encrypted.by.the.host"
            let encrypted = try Self.virsh(["set-user-password", domain, "root", given, "--encrypted"])
            #expect(encrypted.status == 0, "set-user-password --encrypted: \(encrypted.output)")
            #expect(try ShadowCheck.hash(of: "root", in: Self.readGuestFile(domain, "/etc/shadow")) == given)

            // shutdown --mode agent: no reply by design; libvirt waits for QEMU's SHUTDOWN.
            let shutdown = try Self.virsh(["shutdown", domain, "--mode", "agent"])
            #expect(shutdown.status == 0, "shutdown --mode agent: \(shutdown.output)")
            let gone = try waitUntil(timeout: 180, interval: 1) { try Self.virsh(["domstate", domain]).status != 0 }
            #expect(gone, "the transient domain is still there 180 s after the agent shutdown; console:\n\(console())")
        }
    }
}
