import Foundation
import Testing
@testable import HostVMM

@Suite struct VMConfigTests {
    @Test func parsesSizes() throws {
        #expect(try VMConfig.parseSize("512M") == 512 << 20)
        #expect(try VMConfig.parseSize("2G") == 2 << 30)
        #expect(try VMConfig.parseSize("1.5G") == 3 << 29)
        #expect(try VMConfig.parseSize("1024") == 1 << 30)
        #expect(try VMConfig.parseSize("64KB") == 64 << 10)
        for bad in ["", "M", "-1G", "abc", "1GiB", "0"] {
            #expect(throws: VMConfigError.self, "\(bad)") { try VMConfig.parseSize(bad) }
        }
    }

    @Test func validatesNames() throws {
        try VMConfig.validate(name: "default")
        try VMConfig.validate(name: "web-1.test_a")
        for bad in ["", "../x", "a/b", ".hidden", "a b", String(repeating: "x", count: 41)] {
            #expect(throws: VMConfigError.self, "\(bad)") { try VMConfig.validate(name: bad) }
        }
    }
}

@Suite struct QEMUCommandLineTests {
    let args = QEMUCommandLine.arguments(
        config: VMConfig(name: "t", memoryBytes: 512 << 20, cpus: 2, accelerator: .forced(.tcg),
                         kernelPath: "/k", initrdPath: "/i", qemuPath: "/usr/bin/qemu-system-x86_64"),
        state: StateDirectory(path: "/run/hostvmm/t"))

    private func value(after flag: String, containing text: String) -> String? {
        args.indices.dropLast().first { args[$0] == flag && args[$0 + 1].contains(text) }.map { args[$0 + 1] }
    }

    @Test func hasEveryChannelAndDevice() {
        #expect(args.contains("-nodefaults"))
        #expect(value(after: "-machine", containing: "q35,memory-backend=ram0") != nil)
        #expect(value(after: "-object", containing: "memory-backend-memfd") == "memory-backend-memfd,id=ram0,size=512M,share=on")
        #expect(value(after: "-device", containing: "name=org.qemu.guest_agent.0") != nil)
        #expect(value(after: "-device", containing: "name=com.redhat.spice.0") != nil)
        #expect(value(after: "-device", containing: "pvpanic-pci") != nil)
        #expect(value(after: "-device", containing: "virtio-balloon-pci")?.contains("deflate-on-oom=on,free-page-reporting=on") == true)
        #expect(value(after: "-chardev", containing: "path=/run/hostvmm/t/qmp.sock") != nil)
        #expect(value(after: "-chardev", containing: "path=/run/hostvmm/t/console.log") != nil)
        #expect(value(after: "-accel", containing: "tcg") != nil)
        #expect(value(after: "-display", containing: "none") != nil)
    }

    /// The display's devices, and QEMU's D-Bus display only as the resize channel when QEMU has it.
    @Test func displayAndInputs() throws {
        var config = VMConfig(name: "t", memoryBytes: 512 << 20, cpus: 2, accelerator: .forced(.tcg),
                              kernelPath: "/k", initrdPath: "/i", qemuPath: "/q")
        config.display = true
        config.inputs = true
        let state = StateDirectory(path: "/run/hostvmm/t")
        func args(_ c: VMConfig) -> [String] { QEMUCommandLine.arguments(config: c, state: state) }
        let plain = args(config)
        #expect(plain.contains("vhost-user-gpu-pci,chardev=gpu,id=gpu0,max_outputs=1,queue_reset=off"))
        #expect(plain.filter { $0.hasPrefix("vhost-user-input-pci") }.count == 3, "keyboard, tablet, mouse")
        #expect(plain[try #require(plain.firstIndex(of: "-display")) + 1] == "none")
        #expect(plain.contains { $0.hasPrefix("console=tty0 ") })
        config.displayConsole = true
        let live = args(config)
        #expect(live[try #require(live.firstIndex(of: "-display")) + 1] == "dbus,p2p=yes")
        config.display = false
        let none = args(config)
        #expect(none[try #require(none.firstIndex(of: "-display")) + 1] == "none")
        #expect(!none.contains { $0.contains("vhost-user-gpu") || $0.hasPrefix("console=tty0") })
    }

    /// QEMU's seccomp sandbox, denying spawn, setuid and resource control too, unless --no-sandbox.
    @Test func sandboxedUnlessAskedNotTo() {
        var config = VMConfig(name: "t", memoryBytes: 512 << 20, cpus: 2, accelerator: .forced(.tcg),
                              kernelPath: "/k", initrdPath: "/i", qemuPath: "/q")
        let state = StateDirectory(path: "/run/hostvmm/t")
        let on = QEMUCommandLine.arguments(config: config, state: state)
        let at = on.firstIndex(of: "-sandbox")
        #expect(at.map { on[$0 + 1] } == "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny")
        config.sandbox = false
        #expect(!QEMUCommandLine.arguments(config: config, state: state).contains("-sandbox"))
    }

    /// hostvmm's own filter refuses network sockets unless PulseAudio is named over TCP.
    @Test func networkSocketsOnlyForATCPPulseServer() throws {
        var audio = try AudioSetup.parse("pulse")
        for (server, network) in [("/run/pulse/native", false), ("unix:/tmp/p", false), ("tcp:10.0.0.2:4713", true),
                                  ("pulsehost", true), ("unix:/a tcp:b", true)] {
            audio.pulseServer = server
            #expect(VirtualMachine.needsNetwork(audio) == network, "\(server)")
        }
        #expect(!VirtualMachine.needsNetwork(try AudioSetup.parse("spice")), "no PulseAudio, no network")
    }

    /// --audio: the vhost-user-snd device on sound.sock, unless none.
    @Test func audioDeviceAndModes() throws {
        var config = VMConfig(name: "t", memoryBytes: 512 << 20, cpus: 2, accelerator: .forced(.tcg),
                              kernelPath: "/k", initrdPath: "/i", qemuPath: "/q")
        let state = StateDirectory(path: "/run/hostvmm/t")
        let on = QEMUCommandLine.arguments(config: config, state: state)
        #expect(on.contains("socket,id=snd,path=/run/hostvmm/t/sound.sock"))
        #expect(on.contains("vhost-user-snd-pci,chardev=snd,id=snd0,queue_reset=off"))
        config.audio = try AudioSetup.parse("none")
        #expect(!QEMUCommandLine.arguments(config: config, state: state).contains { $0.contains("snd") })

        let auto = try AudioSetup.parse("auto")
        #expect(auto.device && auto.spice && auto.pulse == .ifReachable)
        #expect(try AudioSetup.parse("spice").pulse == .off)
        let pulse = try AudioSetup.parse("pulse")
        #expect(!pulse.spice && pulse.pulse == .on)
        let both = try AudioSetup.parse("spice+pulse")
        #expect(both.spice && both.pulse == .on)
        #expect(throws: VMConfigError.self) { try AudioSetup.parse("alsa") }
    }
}

@Suite struct AcceleratorTests {
    private func sysModule(_ modules: [String]) throws -> String {
        let dir = try TestEnvironment.temporaryDirectory("sysmod")
        for m in modules { try FileManager.default.createDirectory(atPath: "\(dir)/\(m)", withIntermediateDirectories: true) }
        return dir
    }

    @Test func kvmPVMMeansTCG() throws {
        let dir = try sysModule(["kvm", "kvm_pvm"])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let choice = AcceleratorChoice.detect(sysModule: dir, devKVM: "/dev/null")
        #expect(choice.kind == .tcg)
        #expect(choice.reason.contains("kvm_pvm"))
    }

    @Test func hardwareKVMIsUsed() throws {
        let dir = try sysModule(["kvm", "kvm_intel"])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // /dev/null stands in for a usable /dev/kvm: only its accessibility is checked here.
        let choice = AcceleratorChoice.detect(sysModule: dir, devKVM: "/dev/null")
        #expect(choice.kind == .kvm)
        #expect(choice.reason.contains("kvm_intel"))
    }

    @Test func noKVMAtAll() throws {
        let dir = try sysModule([])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let choice = AcceleratorChoice.detect(sysModule: dir, devKVM: "/nonexistent/kvm")
        #expect(choice.kind == .tcg)
        #expect(choice.reason.contains("absent"))
    }

    @Test func thisMachine() {
        // These machines carry kvm_pvm (field-notes.md): the choice must be TCG with that reason.
        let choice = AcceleratorChoice.detect()
        if FileManager.default.fileExists(atPath: "/sys/module/kvm_pvm") {
            #expect(choice.kind == .tcg)
        }
    }
}

@Suite struct QEMUBinaryTests {
    @Test func parsesVersionLine() {
        #expect(QEMUBinary.parseVersion("QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2)")! == (10, 0, 2))
        #expect(QEMUBinary.parseVersion("nonsense") == nil)
    }

    @Test func missingQEMUNamesThePackage() {
        #expect {
            _ = try QEMUBinary.locate(explicitPath: "/nonexistent/qemu-system-x86_64")
        } throws: { error in
            "\(error)".contains("qemu-system-x86") && "\(error)".contains("bookworm-backports")
        }
    }

    /// A stand-in for an old QEMU (Debian bookworm's own 7.2 cannot be installed beside 10).
    @Test func oldQEMUIsRefused() throws {
        let dir = try TestEnvironment.temporaryDirectory("oldqemu")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let fake = "\(dir)/qemu-system-x86_64"
        try "#!/bin/sh\necho 'QEMU emulator version 7.2.15 (Debian 1:7.2+dfsg-7+deb12u16)'\n"
            .write(toFile: fake, atomically: true, encoding: .utf8)
        chmod(fake, 0o755)
        #expect {
            _ = try QEMUBinary.locate(explicitPath: fake)
        } throws: { error in
            "\(error)".contains("7.2.15") && "\(error)".contains("qemu-system-x86")
        }
    }

    @Test func installedQEMUIsAccepted() throws {
        let q = try QEMUBinary.locate()
        #expect(q.version.major >= 10)
    }
}
