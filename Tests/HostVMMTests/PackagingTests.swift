import Foundation
import GuestImage
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

/// scripts/package.sh's .deb of hostvmm (issue #17): dpkg installs it, the binary loads no
/// library from the Swift toolchain, and with the toolchain and the source tree out of
/// reach it builds the embedded image from the agent it carries and boots a VM.
@Suite(.serialized, .timeLimit(.minutes(20))) struct HostVMMPackageTests {
    @Test func installsAndRunsWithoutTheToolchain() throws {
        let work = try TestEnvironment.temporaryDirectory("deb")
        defer { try? FileManager.default.removeItem(atPath: work) }
        let built = try runCommand("/bin/bash", ["\(TestEnvironment.packageRoot)/scripts/package.sh", "\(work)/out"],
                                   timeout: 1200)
        #expect(built.status == 0, "\(built.output.suffix(3000))")
        // Its last line on stdout is the path; stderr's progress lines interleave in the transcript.
        let deb = try #require(built.output.split(separator: "\n").last { $0.hasSuffix(".deb") }.map(String.init),
                               "package.sh printed no .deb path")
        #expect(deb.hasSuffix(".deb"), "\(built.output.suffix(2000))")
        let depends = try runCommand("/usr/bin/dpkg-deb", ["-f", deb, "Depends"])
        #expect(depends.output.contains("qemu-system-x86") && depends.output.contains("libpulse0"), "\(depends.output)")

        // dpkg -i into a root of its own (the host's package database is left alone).
        let root = "\(work)/root".replacingOccurrences(of: "//", with: "/")  // as /proc/self/exe shows it
        for dir in ["var/lib/dpkg/info", "var/lib/dpkg/updates"] {
            try FileManager.default.createDirectory(atPath: "\(root)/\(dir)", withIntermediateDirectories: true)
        }
        #expect(FileManager.default.createFile(atPath: "\(root)/var/lib/dpkg/status", contents: nil))
        let installed = try runCommand("/usr/bin/dpkg", ["--root=\(root)", "--force-depends", "--log=/dev/null", "-i", deb])
        #expect(installed.status == 0, "\(installed.output)")
        let hostvmm = "\(root)/usr/bin/hostvmm"
        let ldd = try runCommand("/usr/bin/ldd", [hostvmm])
        #expect(ldd.status == 0 && !ldd.output.contains("/opt/") && !ldd.output.contains("libswift")
                && !ldd.output.contains("Foundation"), "\(ldd.output)")

        // A cache of its own, seeded with the kernel package only (no download), so the image
        // is really built: from the packaged agent, with /opt/swift and the fixed spice-server
        // of /usr/local hidden (the package's copy is used) and no source tree around.
        let cache = "\(work)/cache"
        try FileManager.default.createDirectory(atPath: "\(cache)/debs", withIntermediateDirectories: true)
        let kernels = "\(ImageBuilder.defaultCacheDir())/debs"
        let debs = ((try? FileManager.default.contentsOfDirectory(atPath: kernels)) ?? [])
            .filter { $0.hasPrefix("linux-image-") && $0.hasSuffix(".deb") }.map { "\(kernels)/\($0)" }
        try #require(!debs.isEmpty, "no cached kernel package (the image tests build one)")
        for d in debs { try FileManager.default.copyItem(atPath: d, toPath: "\(cache)/debs/\((d as NSString).lastPathComponent)") }
        let state = "\(work)/state"
        let script = """
            set -e
            mount -t tmpfs none /opt/swift
            mount -t tmpfs none /usr/local/lib/hostvmm
            cd /
            export HOSTVMM_STATE_DIR=\(state) HOSTVMM_CACHE_DIR=\(cache)
            \(hostvmm) up --detach --name pkg --no-display --audio none --no-usb
            \(hostvmm) ping pkg
            \(hostvmm) down pkg
            """
        let run = try runCommand("/usr/bin/unshare", ["-m", "/bin/sh", "-c", script], timeout: 600)
        #expect(run.status == 0, "\(run.output)")
        #expect(run.output.contains("guest-agent: the packaged \(root)/usr/lib/hostvmm/guest-agent"), "\(run.output)")
        #expect(!run.output.contains("building guest-agent"), "\(run.output)")
        #expect(run.output.contains("packing initramfs") && run.output.contains("agent answered"), "\(run.output)")
    }
}
