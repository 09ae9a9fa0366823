import AgentProtocol
import Foundation
import GuestImage
import TestSupport
import Testing

/// Our agent in a person's guest, the way a fleet installs it (issue #15): a Debian disk
/// (the desktop image's root file system behind GPT + systemd-boot, booted by OVMF with
/// nothing but `--disk`) first gets Debian's own qemu-guest-agent with apt's .debs, started
/// by hand, which takes the port from the agent the image carries; then `dpkg -i` of the package
/// scripts/build-agent-deb.sh makes, which removes qemu-guest-agent (Conflicts/Replaces)
/// and whose unit starts. The host drives both through the same hostvmm channel.
@Suite(.serialized, .timeLimit(.minutes(30))) struct DebianGuestPackageTests {
    /// Debian's qemu-guest-agent and what the desktop image lacks of its dependencies,
    /// fetched once with `apt-get download` into the cache (apt checks them against its
    /// signed indexes).
    static let stockPackages = ["qemu-guest-agent", "libglib2.0-0", "libnuma1", "liburing2"]

    static func stockDebs() throws -> [String] {
        let cache = "\(ImageBuilder.defaultCacheDir())/stock-agent-debs"
        try FileManager.default.createDirectory(atPath: cache, withIntermediateDirectories: true)
        func present() -> [String] {
            ((try? FileManager.default.contentsOfDirectory(atPath: cache)) ?? []).filter { $0.hasSuffix(".deb") }.sorted()
        }
        if present().count < stockPackages.count {
            let fetched = try runCommand("/bin/sh", ["-c", "cd \"$1\" && shift && apt-get download \"$@\"", "sh", cache] + stockPackages,
                                         timeout: 300)
            guard fetched.status == 0 else { throw TestFailure("apt-get download \(stockPackages): \(fetched.output)") }
        }
        let debs = present()
        guard debs.count == stockPackages.count else { throw TestFailure("expected \(stockPackages.count) .debs in \(cache): \(debs)") }
        return debs.map { "\(cache)/\($0)" }
    }

    static func buildAgentPackage(into dir: String) throws -> String {
        let agent = try runCommand(TestEnvironment.hostvmm, ["image", "agent"], timeout: 900)
        guard agent.status == 0, let path = agent.output.split(separator: "\n").last.map(String.init) else {
            throw TestFailure("hostvmm image agent: \(agent.output)")
        }
        let built = try runCommand("/bin/bash", ["\(TestEnvironment.packageRoot)/scripts/build-agent-deb.sh", "--agent", path, dir],
                                   timeout: 120)
        guard built.status == 0, let deb = built.output.split(separator: "\n").last.map(String.init), deb.hasSuffix(".deb") else {
            throw TestFailure("build-agent-deb.sh: \(built.output)")
        }
        return deb
    }

    /// guest-info's version, polled until `accept` takes it: the agent behind the port is
    /// being replaced, and requests in between may time out.
    static func waitForAgent(_ vm: BootedVM, timeout: TimeInterval, _ accept: (String) -> Bool) -> String? {
        var version: String?
        _ = waitUntil(timeout: timeout, interval: 1) {
            version = (try? vm.agent(#"{"execute":"guest-info"}"#))?["return"]?["version"]?.stringValue
            return version.map(accept) ?? false
        }
        return version.map(accept) == true ? version : nil
    }

    /// Runs a command in its own systemd unit (dpkg stops the agent that started it, and
    /// must not be killed with it) and waits for its exit status, asking whichever agent
    /// holds the port at the time. Returns the exit status and the command's output.
    static func runDetached(_ vm: BootedVM, _ unit: String, _ command: String, timeout: TimeInterval) throws -> (Int, String) {
        let started = try vm.guestRun("rm -f /var/log/\(unit).*; systemd-run --unit=\(unit) --collect /bin/sh -c "
                                      + "'\(command) > /var/log/\(unit).log 2>&1; echo $? > /var/log/\(unit).status'")
        guard started.code == 0 else { throw TestFailure("systemd-run \(unit): \(started.output)") }
        var status: Int?
        _ = waitUntil(timeout: timeout, interval: 2) {
            status = (try? vm.guestRun("cat /var/log/\(unit).status 2>/dev/null", timeout: 30))
                .flatMap { Int($0.output.trimmingCharacters(in: .whitespacesAndNewlines)) }
            return status != nil
        }
        guard let status else { throw TestFailure("\(unit) did not finish within \(timeout) s:\n\(vm.postMortem())") }
        let log = (try? vm.guestRun("cat /var/log/\(unit).log", timeout: 30).output) ?? ""
        return (status, log)
    }

    @Test func debianDiskSwapsQemuGuestAgentForOurPackage() throws {
        let dir = try TestEnvironment.temporaryDirectory("debian-deb")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let disk = try DiskBootTests.makeDisk("uefi", in: dir, distribution: true)
        let stock = try Self.stockDebs()
        let ours = try Self.buildAgentPackage(into: dir)

        let vm = try BootedVM(name: "debian-deb", options: ["--disk", disk, "--firmware", "uefi", "--no-display", "--audio", "none"])
        let os = try vm.agent(#"{"execute":"guest-get-osinfo"}"#)["return"]
        #expect(os?["id"] == .string("debian") && os?["version-id"] == .string("12"), "\(os.map(JSONWriter.string) ?? "")")

        // Debian's qemu-guest-agent, as a person's guest has it.
        _ = try vm.guestRun("mkdir -p /tmp/stock")
        for deb in stock {
            try vm.putFile("/tmp/stock/\((deb as NSString).lastPathComponent)", Array(try Data(contentsOf: URL(fileURLWithPath: deb))))
        }
        // Debian's postinst does not start a static unit ("not starting it"): udev would at
        // the next boot; a person starts it by hand, which stops ours (Conflicts=).
        let stockInstall = try Self.runDetached(vm, "stock-agent-install",
                                                "dpkg -i /tmp/stock/*.deb && systemctl start qemu-guest-agent.service", timeout: 600)
        #expect(stockInstall.0 == 0, "dpkg -i of Debian's qemu-guest-agent: \(stockInstall.1)")
        let stockVersion = Self.waitForAgent(vm, timeout: 300) { $0.hasPrefix("10.") }
        #expect(stockVersion != nil, "Debian's qemu-ga did not take the port:\n\(vm.postMortem())")
        let ping = try vm.cli(["ping", vm.name])
        #expect(ping.status == 0, "ping through Debian's qemu-ga: \(ping.output)")

        // Our package, through Debian's agent: dpkg removes qemu-guest-agent, our unit starts.
        let package = (ours as NSString).lastPathComponent
        try vm.putFile("/tmp/\(package)", Array(try Data(contentsOf: URL(fileURLWithPath: ours))))
        let install = try Self.runDetached(vm, "hostvmm-agent-install", "dpkg -i /tmp/\(package)", timeout: 600)
        #expect(install.0 == 0, "dpkg -i of our package: \(install.1)")
        #expect(install.1.contains("will remove qemu-guest-agent in favour of hostvmm-guest-agent"), "dpkg: \(install.1)")
        let ourVersion = Self.waitForAgent(vm, timeout: 300) { !$0.hasPrefix("10.") }
        #expect(ourVersion == "0.2.0", "our agent did not come back from the package:\n\(vm.postMortem())")

        let state = try vm.guestRun("""
            dpkg-query -W -f='${db:Status-Abbrev}${Version}\\n' hostvmm-guest-agent; \
            dpkg-query -W -f='${db:Status-Abbrev}\\n' qemu-guest-agent 2>&1 || true; \
            systemctl is-active guest-agent.service
            """)
        let lines = state.output.split(separator: "\n").map(String.init)
        #expect(lines.first?.hasPrefix("ii 0.2.0+git") == true, "hostvmm-guest-agent is not installed: \(state.output)")
        #expect(lines.count > 1 && !lines[1].hasPrefix("ii"), "qemu-guest-agent is still installed: \(state.output)")
        #expect(lines.contains("active"), "guest-agent.service: \(state.output)")

        // The package leaves the SPICE port to spice-vdagent: the agent holds the QGA port only.
        let ports = try vm.guestRun("""
            qga=$(readlink -f /dev/virtio-ports/org.qemu.guest_agent.0); \
            spice=$(readlink -f /dev/virtio-ports/com.redhat.spice.0); \
            for fd in /proc/$(pidof guest-agent)/fd/*; do t=$(readlink "$fd"); \
            [ "$t" = "$qga" ] && echo holds-qga; [ "$t" = "$spice" ] && echo holds-spice; done; true
            """)
        #expect(ports.output.contains("holds-qga") && !ports.output.contains("holds-spice"), "\(ports.output)")

        // What libvirt asks of an agent, through the packaged one in a Debian guest.
        let fsinfo = try vm.agent(#"{"execute":"guest-get-fsinfo"}"#)["return"]?.arrayValue ?? []
        let root = fsinfo.first { $0["mountpoint"] == .string("/") }
        #expect(root?["type"] == .string("ext4"), "\(fsinfo)")
        #expect(root?["disk"]?.arrayValue?.first?["bus-type"] == .string("virtio"), "\(fsinfo)")
        let password = "debian guest: pa$$"
        let set = try vm.agent(#"{"execute":"guest-set-user-password","arguments":{"username":"root","password":"\#(Base64.encode(Array(password.utf8)))","crypted":false}}"#)
        #expect(set["return"] == .object([:]), "\(JSONWriter.string(set))")
        let hash = try ShadowCheck.hash(of: "root", in: vm.getFile("/etc/shadow"))
        #expect(try ShadowCheck.matches(password: password, hash: hash), "the hash in /etc/shadow does not verify: \(hash)")
        let shadowMode = try vm.guestRun("stat -c '%a %U %G' /etc/shadow")
        #expect(shadowMode.output.trimmingCharacters(in: .whitespacesAndNewlines) == "640 root shadow", "Debian's mode and owner kept: \(shadowMode.output)")

        let shutdown = try vm.cli(["shutdown", vm.name, "--mode", "agent"])
        #expect(shutdown.status == 0, "\(shutdown.output)")
        #expect(vm.upExitCode(timeout: 180) == 0, "\(vm.postMortem())")
    }
}
