import TestSupport
import AgentProtocol
import Foundation
import LinuxSystem
import Testing
@testable import GuestImage
@testable import HostVMM

/// The pure parts of the desktop image: what it writes and loads, in which order.
@Suite struct DesktopImageFilesTests {
    /// The agent's unit and udev rule in the image are packaging/'s, byte for byte.
    @Test func agentUnitAndRuleAreThePackagingFiles() throws {
        let unit = try String(contentsOfFile: "\(TestEnvironment.packageRoot)/packaging/guest-agent.service", encoding: .utf8)
        let rule = try String(contentsOfFile: "\(TestEnvironment.packageRoot)/packaging/60-guest-agent.rules", encoding: .utf8)
        #expect(DesktopRootfsFiles.agentUnit == unit)
        #expect(DesktopRootfsFiles.agentUdevRule == rule)
        // The unit's ExecStart is where the image puts the binary.
        #expect(unit.contains("ExecStart=/\(DesktopRootfsFiles.agentPath) "))
    }

    /// Lines of the real 6.12 kernel's modules.dep (made by depmod).
    static let modulesDep = """
        kernel/fs/mbcache.ko.xz:
        kernel/fs/ext4/ext4.ko.xz: kernel/lib/crc16.ko.xz kernel/fs/mbcache.ko.xz kernel/fs/jbd2/jbd2.ko.xz
        kernel/fs/jbd2/jbd2.ko.xz:
        kernel/crypto/crc32c_generic.ko.xz:
        kernel/lib/crc16.ko.xz:
        kernel/drivers/block/virtio_blk.ko.xz:
        """

    /// crc32c_generic is only a soft dependency of ext4/jbd2, which busybox
    /// insmod ignores: it must be loaded before them, and ext4 last.
    @Test func initramfsLoadsCrc32cFirstAndExt4Last() throws {
        let resolver = ModuleResolver(modulesDep: Self.modulesDep, modulesBuiltin: "kernel/drivers/virtio/virtio_pci.ko\n")
        let order = try resolver.loadOrder(for: DesktopRootfsFiles.initramfsModules).map(ModuleResolver.moduleName(ofPath:))
        #expect(order == ["crc32c_generic", "virtio_blk", "crc16", "mbcache", "jbd2", "ext4"])
    }

    @Test func rootfsModulesIncludeTheInitramfsOnesAndOurDevices() {
        let rootfs = Set(DesktopRootfsFiles.rootfsModules)
        #expect(Set(DesktopRootfsFiles.initramfsModules).isSubset(of: rootfs))
        #expect(Set(GuestInitFiles.modules + GuestInitFiles.displayModules).isSubset(of: rootfs), "the default guest's device modules")
    }

    @Test func autologinIsSystemdEscapedForRootOnTty1() {
        #expect(DesktopRootfsFiles.autologin.contains(#"-o '-p -f -- \\u'"#))
        #expect(DesktopRootfsFiles.autologin.contains("--autologin root %I $TERM"))
        #expect(DesktopRootfsFiles.files.contains { $0.path == "etc/systemd/system/getty@tty1.service.d/autologin.conf" })
    }

    @Test func pathsAreRelativeAndUnique() {
        let paths = DesktopRootfsFiles.files.map(\.path) + DesktopRootfsFiles.symlinks.map(\.path) + DesktopRootfsFiles.removals
        #expect(Set(paths).count == paths.count)
        #expect(paths.allSatisfy { !$0.hasPrefix("/") && !$0.contains("..") })
        #expect(DesktopRootfsFiles.symlinks.allSatisfy { $0.target.hasPrefix("/") }, "guest-absolute targets")
    }

    @Test func machineIDsAreFresh32HexDigits() {
        let a = DesktopRootfsFiles.randomMachineID()
        let b = DesktopRootfsFiles.randomMachineID()
        #expect(a.count == 32 && b.count == 32)
        #expect(a.allSatisfy { "0123456789abcdef".contains($0) })
        #expect(a != b)
    }

    /// The shell scripts parse (bash -n / sh -n), as the guest's shells will read them.
    @Test func scriptsParse() throws {
        let dir = try TestEnvironment.temporaryDirectory("desktop-scripts")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for (name, text, shell) in [("locker", DesktopRootfsFiles.sessionLocker, "/bin/bash"),
                                    ("init", DesktopRootfsFiles.initramfsInit, "/bin/sh")] {
            try text.write(toFile: "\(dir)/\(name)", atomically: true, encoding: .utf8)
            let r = try runCommand(shell, ["-n", "\(dir)/\(name)"])
            #expect(r.status == 0, "\(name): \(r.output)")
        }
    }

    /// The builder never writes through a symlink that leaves the tree.
    @Test func rootfsWriterRefusesToLeaveTheRoot() throws {
        let dir = try TestEnvironment.temporaryDirectory("rootfs-writer")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: "\(dir)/root/usr/lib", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: "\(dir)/outside", withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: "\(dir)/root/lib", withDestinationPath: "usr/lib")
        try FileManager.default.createSymbolicLink(atPath: "\(dir)/root/escape", withDestinationPath: "\(dir)/outside")
        let writer = try RootfsWriter(root: "\(dir)/root")
        try writer.write("lib/x/file", Data("ok".utf8), mode: 0o644)
        #expect(FileManager.default.fileExists(atPath: "\(dir)/root/usr/lib/x/file"))
        #expect(throws: ImageBuildError.self) { try writer.write("escape/file", Data("no".utf8), mode: 0o644) }
        #expect(!FileManager.default.fileExists(atPath: "\(dir)/outside/file"))
        // A symlink at the target itself is replaced, not written through.
        try FileManager.default.createSymbolicLink(atPath: "\(dir)/root/etc-link", withDestinationPath: "\(dir)/outside/victim")
        try writer.write("etc-link", Data("mine".utf8), mode: 0o600)
        #expect(!FileManager.default.fileExists(atPath: "\(dir)/outside/victim"))
    }

    @Test func desktopDefaultsToMoreMemory() throws {
        #expect(try VMConfig.parseSize(GuestImageKind.desktop.defaultMemory) == 1 << 30)
        #expect(try VMConfig.parseSize(GuestImageKind.default.defaultMemory) == VMConfig.defaultMemoryBytes)
    }

    @Test func qemuGetsTheOverlayAsVirtioBlkAndTheKernelItsRoot() {
        var config = VMConfig(name: "d", memoryBytes: 1 << 30, cpus: 2, accelerator: .forced(.tcg), kernelPath: "/k",
                              initrdPath: "/i", qemuPath: "/usr/bin/qemu-system-x86_64")
        let state = StateDirectory(path: "/run/hostvmm/d")
        let without = QEMUCommandLine.arguments(config: config, state: state)
        #expect(!without.contains("-drive"))
        #expect(!without.joined(separator: " ").contains("root="))
        config.rootDisk = "/cache/images/desktop-x/disk.img"
        let args = QEMUCommandLine.arguments(config: config, state: state)
        let drive = args.indices.dropLast().first { args[$0] == "-drive" }.map { args[$0 + 1] }
        #expect(drive == "file=/run/hostvmm/d/disk.qcow2,if=none,id=disk0,format=qcow2,cache=unsafe,discard=unmap")
        #expect(!args.contains { $0.contains("desktop-x/disk.img") }, "QEMU must not open the cached disk itself")
        #expect(args.contains("virtio-blk-pci,drive=disk0,id=vda"))
        let append = args.indices.dropLast().first { args[$0] == "-append" }.map { args[$0 + 1] } ?? ""
        #expect(append.hasSuffix(" root=/dev/vda rw"))
        #expect(append.hasPrefix(config.kernelCommandLine))
    }
}

/// Boots the desktop image with the real `hostvmm up --image desktop` and
/// checks what a desktop feature relies on: systemd's logind session on tty1,
/// locking through logind, our agent started by its unit, and a cache the VM
/// cannot write.
@Suite(.serialized, .timeLimit(.minutes(30))) struct DesktopGuestTests {
    /// Builds (or finds) the image through the CLI, outside BootedVM's boot
    /// bound: a first build runs debootstrap (minutes).
    static func buildImage() throws -> (disk: String, output: String) {
        let r = try runCommand(TestEnvironment.hostvmm, ["image", "build", "--image", "desktop"], timeout: 900)
        guard r.status == 0 else { throw TestFailure("image build failed: \(r.output)") }
        guard let line = r.output.split(separator: "\n").first(where: { $0.hasPrefix("disk: ") }) else {
            throw TestFailure("no disk path in: \(r.output)")
        }
        return (String(line.dropFirst("disk: ".count)), r.output)
    }

    static func sha256(_ path: String) throws -> String {
        let r = try runCommand("/usr/bin/sha256sum", [path], timeout: 120)
        guard r.status == 0, let sum = r.output.split(separator: " ").first else { throw TestFailure("sha256sum: \(r.output)") }
        return String(sum)
    }

    /// Polls `check` until it returns a value or `timeout` passes. Each
    /// attempt is a guest-exec round trip (~0.2-1 s under TCG); the 0.5 s
    /// pause only spaces the attempts, it synchronises nothing.
    static func poll<T>(_ timeout: TimeInterval, _ check: () throws -> T?) rethrows -> T? {
        let deadline = Date().addingTimeInterval(timeout)
        repeat {
            if let value = try check() { return value }
            Thread.sleep(forTimeInterval: 0.5)
        } while Date() < deadline
        return try check()
    }

    /// `loginctl show-session` of the session on tty1, as KEY=VALUE pairs.
    static func tty1Session(_ vm: BootedVM) throws -> [String: String]? {
        let r = try vm.guestRun("""
            for s in $(loginctl list-sessions --no-legend | awk '{print $1}'); do
              if [ "$(loginctl show-session "$s" -p TTY --value)" = tty1 ]; then
                loginctl show-session "$s" -p Id -p Name -p TTY -p Seat -p Type -p Class -p State -p Active -p LockedHint
                exit 0
              fi
            done
            exit 1
            """, timeout: 60)
        guard r.code == 0 else { return nil }
        var fields: [String: String] = [:]
        for line in r.output.split(separator: "\n") {
            guard let eq = line.firstIndex(of: "=") else { continue }
            fields[String(line[..<eq])] = String(line[line.index(after: eq)...])
        }
        return fields
    }

    @Test func bootsDebianWithAnActiveAutologinSessionThatLocks() throws {
        let built = try Self.buildImage()
        let hashBefore = try Self.sha256(built.disk)

        let vm = try BootedVM(name: "desktop-e2e", options: ["--image", "desktop"])
        if let ready = vm.up.output.first(where: { $0.contains("agent ready after") }) {
            print("desktop guest: \(ready)")
        }
        #expect(vm.up.output.contains { $0.contains("root disk: \(vm.stateDir)/disk.qcow2") }, "\(vm.up.transcript)")

        let ping = try vm.agent(#"{"execute":"guest-ping"}"#)
        #expect(ping["return"] == .object([:]), "\(JSONWriter.string(ping))")
        let osinfo = try vm.agent(#"{"execute":"guest-get-osinfo"}"#)
        #expect(osinfo["return"]?["id"] == .string("debian"), "\(JSONWriter.string(osinfo))")
        #expect(osinfo["return"]?["version-id"] == .string("12"), "\(JSONWriter.string(osinfo))")

        // The agent runs as systemd started it: through its unit.
        let unit = try vm.guestRun("systemctl is-active guest-agent.service; systemctl show -p ConditionResult --value systemd-firstboot.service; cat /etc/machine-id")
        let unitLines = unit.output.split(separator: "\n").map(String.init)
        #expect(unitLines.first == "active", "\(unit.output)")
        // A valid machine id: this is no first boot, so no firstboot prompt on the console.
        #expect(unitLines.dropFirst().first == "no", "\(unit.output)")
        #expect(unitLines.dropFirst(2).first?.count == 32, "\(unit.output)")

        // The NIC: systemd-networkd takes a DHCP lease from QEMU's user network.
        let lease = Self.poll(60) { () -> String? in
            guard let r = try? vm.agent(#"{"execute":"guest-network-get-interfaces"}"#) else { return nil }
            let text = JSONWriter.string(r)
            return text.contains("10.0.2.15") ? text : nil
        }
        #expect(lease != nil, "no 10.0.2.15: \(JSONWriter.string((try? vm.agent(#"{"execute":"guest-network-get-interfaces"}"#)) ?? .null))")

        // The sound card: udev loads virtio_snd, Debian's aplay (alsa-utils) sees it.
        let cards = try vm.guestRun("aplay -l 2>&1")
        #expect(cards.output.contains("VirtIO SoundCard"), "\(cards.output)")

        // getty's autologin and pam_systemd make a logind session on tty1; it
        // becomes active a few seconds after the agent is up (bounded wait).
        let session = Self.poll(90) { () -> [String: String]? in
            guard let s = try? Self.tty1Session(vm), s["State"] == "active" else { return nil }
            return s
        }
        let s = try #require(session, "no active logind session on tty1")
        #expect(s["Name"] == "root")
        #expect(s["Seat"] == "seat0")
        #expect(s["Type"] == "tty")
        #expect(s["Class"] == "user")
        #expect(s["Active"] == "yes")
        #expect(s["LockedHint"] == "no")
        let id = try #require(s["Id"])

        // A person at the SPICE client types into the root shell on tty1 (shown on the
        // virtio-gpu console): the command runs in the guest.
        let uri = try vm.cli(["spice", vm.name]).output.trimmingCharacters(in: .whitespacesAndNewlines)
        let typed = try runCommand("/usr/bin/python3", [TestEnvironment.spiceDevicesClient, uri, "type",
                                                        "touch /tmp/typed-at-the-console\\n"], timeout: 60)
        #expect(typed.output.contains("typed"), "client: \(typed.output)")
        let created = Self.poll(30) { () -> Bool? in
            (try? vm.guestRun("test -e /tmp/typed-at-the-console && echo yes"))?.output.hasPrefix("yes") == true ? true : nil
        }
        #expect(created == true, "the command typed at the SPICE client did not run on tty1")

        // `loginctl lock-sessions` -> logind's Lock signal -> session-locker ->
        // SetLockedHint. Re-sent while waiting: the locker's dbus-monitor may
        // not have subscribed yet when the first Lock goes out.
        let locker = Self.poll(60) { () -> Bool? in
            (try? vm.guestRun("systemctl is-active session-locker.service"))?.output.hasPrefix("active") == true ? true : nil
        }
        #expect(locker == true, "session-locker.service is not active")
        let locked = Self.poll(60) { () -> Bool? in
            // After each Lock, the hint is polled in the guest for up to 2 s (bounded; no event reaches the host).
            let check = "[ \"$(loginctl show-session \(id) -p LockedHint --value)\" = yes ]"
            guard let r = try? vm.guestRun("loginctl lock-sessions; for i in $(seq 20); do \(check) && break; sleep 0.1; done; "
                                           + "loginctl show-session \(id) -p LockedHint --value"),
                  r.output.split(separator: "\n").last == "yes" else { return nil }
            return true
        }
        #expect(locked == true, "LockedHint never became yes")
        let log = try vm.guestRun("journalctl -b -u session-locker --no-pager | tail -3; grep -E '^(MemTotal|MemAvailable):' /proc/meminfo")
        print("desktop guest:\n\(log.output)")

        let shutdown = try vm.cli(["shutdown", vm.name])
        #expect(shutdown.status == 0, "\(shutdown.output)")
        #expect(vm.upExitCode() == 0, "\(vm.up.transcript)")

        // The VM wrote only its overlay.
        #expect(try Self.sha256(built.disk) == hashBefore, "the cached disk image changed")
    }
}
