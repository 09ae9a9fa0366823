import Foundation
import Testing

/// The systemd unit and udev rule that start guest-agent like Debian's
/// qemu-guest-agent; systemd's own verifier checks the unit.
@Suite struct PackagingTests {
    @Test func installsBinaryUnitAndRule() throws {
        let root = try TestEnvironment.temporaryDirectory("pkg")
        defer { try? FileManager.default.removeItem(atPath: root) }
        let r = try runCommand("/bin/bash", ["\(TestEnvironment.packageRoot)/packaging/install.sh", TestEnvironment.guestAgent, root])
        #expect(r.status == 0, "\(r.output)")
        let fm = FileManager.default
        #expect(fm.isExecutableFile(atPath: "\(root)/usr/sbin/guest-agent"))
        let rule = try String(contentsOfFile: "\(root)/lib/udev/rules.d/60-guest-agent.rules", encoding: .utf8)
        #expect(rule.contains(#"ATTR{name}=="org.qemu.guest_agent.0""#))
        #expect(rule.contains(#"ENV{SYSTEMD_WANTS}+="guest-agent.service""#))
        let unit = try String(contentsOfFile: "\(root)/lib/systemd/system/guest-agent.service", encoding: .utf8)
        #expect(unit.contains(#"BindsTo=dev-virtio\x2dports-org.qemu.guest_agent.0.device"#))
    }

    @Test func systemdAcceptsTheUnit() throws {
        let dir = try TestEnvironment.temporaryDirectory("unit")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // verify checks that ExecStart exists: point it at the binary we built.
        let unit = try String(contentsOfFile: "\(TestEnvironment.packageRoot)/packaging/guest-agent.service", encoding: .utf8)
            .replacingOccurrences(of: "/usr/sbin/guest-agent", with: TestEnvironment.guestAgent)
        try unit.write(toFile: "\(dir)/guest-agent.service", atomically: true, encoding: .utf8)
        let r = try runCommand("/usr/bin/systemd-analyze", ["verify", "\(dir)/guest-agent.service"])
        #expect(r.status == 0, "\(r.output)")
        #expect(Self.complaints(r.output, about: "guest-agent").isEmpty, "systemd-analyze complained: \(r.output)")
    }

    /// What systemd-analyze says of our unit. It loads the host's units too, and warns about
    /// theirs: libvirt 11 from backports uses Type=notify-reload, which bookworm's systemd 252
    /// does not know. Lines naming another installed unit's file are the host's business.
    static func complaints(_ output: String, about unit: String) -> [String] {
        output.split(separator: "\n").map(String.init).filter { line in
            let hostUnit = ["/lib/systemd/", "/usr/lib/systemd/", "/etc/systemd/"].contains { line.hasPrefix($0) }
            return !hostUnit || line.contains(unit)
        }
    }

    /// The template unit for defined VMs passes systemd's verifier (as the instance a
    /// person enables, hostvmm@NAME).
    @Test func systemdAcceptsTheVMTemplate() throws {
        let dir = try TestEnvironment.temporaryDirectory("vmunit")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let unit = try String(contentsOfFile: "\(TestEnvironment.packageRoot)/packaging/hostvmm@.service", encoding: .utf8)
            .replacingOccurrences(of: "/usr/local/bin/hostvmm", with: TestEnvironment.hostvmm)
        try unit.write(toFile: "\(dir)/hostvmm@.service", atomically: true, encoding: .utf8)
        let r = try runCommand("/usr/bin/systemd-analyze", ["verify", "\(dir)/hostvmm@demo.service"])
        #expect(r.status == 0, "\(r.output)")
        #expect(Self.complaints(r.output, about: "hostvmm@").isEmpty, "systemd-analyze complained: \(r.output)")
    }
}
