import ArgumentParser
import Foundation
import GuestImage
import HostVMM
import LinuxSystem
import pvpanic
import USBRedir

struct UpCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "up",
        abstract: "Boot a VM and supervise it (foreground unless --detach).",
        discussion: """
            In the foreground it prints boot progress, 'agent ready after X s', then one
            event per line. Ctrl-C shuts the guest down gracefully (the agent if it is
            ready, else ACPI); a second Ctrl-C stops QEMU at once. The exit status is 0
            when QEMU exits cleanly (guest poweroff, 'hostvmm shutdown', 'hostvmm down').

            Images (--image), built on first use and cached in \(ImageBuilder.defaultCacheDir()) \
            (HOSTVMM_CACHE_DIR moves it); 'hostvmm image build --image NAME' builds one ahead:
            \(GuestImageKind.allCases.map { "  " + $0.summary }.joined(separator: "\n"))
            A desktop VM boots a copy-on-write overlay of the cached disk (disk.qcow2 in its \
            state directory), made fresh at every 'up': nothing the guest writes survives it.

            The guest gets a screen, keyboard, tablet and mouse by default (--no-display, \
            --no-inputs turn them off): our own virtio-gpu and virtio-input backends, shown \
            and fed through the SPICE server ('hostvmm spice' prints the URI).

            It also gets a sound card (--audio none turns it off): our own virtio-snd; the guest's \
            sound plays in SPICE clients and, when a server answers, on the host's PulseAudio, and \
            a client's microphone records into the guest ('hostvmm audio' shows the streams).
            """
    )

    @Option(name: .long, help: "VM name (state in \(StateDirectory.root())/NAME).")
    var name: String = VMConfig.defaultName

    @Option(name: .long, help: "Guest image: default (busybox, boots in seconds) or desktop (Debian 12 with systemd and logind; first build ~2-4 min). See above.")
    var image: String?

    @Option(name: .long, help: "Guest memory, e.g. 512M or 2G (default: 512M; 1G for --image desktop).")
    var memory: String?

    @Option(name: .long, help: "Virtual CPUs.")
    var cpus: Int = VMConfig.defaultCPUs

    @Option(name: .long, help: "CPU engine: auto (KVM only with kvm_intel/kvm_amd), kvm or tcg.")
    var accel: String = "auto"

    @Flag(name: .long, help: "Run in the background; return once the guest agent answers.")
    var detach = false

    @Option(name: .long, help: "Seconds --detach waits for the agent before giving up (the desktop image boots in ~25-40 s under TCG).")
    var readyTimeout: Double = 300

    @Option(name: .long, help: "Use this guest-agent binary instead of building one.")
    var agent: String?

    @Option(name: .long, help: "Kernel to boot instead of the embedded image's (needs --initrd).")
    var kernel: String?

    @Option(name: .long, help: "Initramfs to boot instead of the embedded image's (needs --kernel).")
    var initrd: String?

    @Option(name: .long, help: ArgumentHelp(
        "A disk image (qcow2 or raw), as /dev/vda, /dev/vdb, ... in order (repeatable).",
        discussion: "Without --image, --kernel or --initrd the VM boots from the first disk through its firmware "
            + "(--firmware); with them the disks are data disks. The guest writes to the file itself (--snapshot: "
            + "to a throwaway overlay). A disk another running VM uses is refused."))
    var disk: [String] = []

    @Option(name: .long, help: "Firmware for booting from a disk: bios (SeaBIOS, default) or uefi (OVMF; its variables persist with the VM's definition).")
    var firmware: String = Firmware.bios.rawValue

    @Flag(name: .long, help: "Writes to the disks go to throwaway overlays (deleted when the VM stops).")
    var snapshot = false

    @Option(name: .long, help: "An ISO image as a CD-ROM (an installer: booted when there is no --disk).")
    var cdrom: String?

    /// The desktop image's own root disk (and --kernel's): a raw image booted as /dev/vda
    /// with root=/dev/vda rw, through an overlay. Set by 'up' itself for --detach.
    @Option(name: .long, help: .hidden)
    var rootDisk: String?

    @Option(name: .long, help: "QEMU binary.")
    var qemu: String?

    @Option(name: .long, help: "After a guest panic is captured: restart (stays paused after 3 panics in 10 minutes), pause, poweroff or preserve (pause and never prune the bundle).")
    var onPanic: String = PanicPolicy.restart.rawValue

    @Option(name: .long, help: "SPICE listen address: ADDR:PORT, ADDR (port 5930 or the next free one) or unix:PATH.")
    var spice: String = "127.0.0.1"

    @Flag(name: .long, help: "No SPICE server.")
    var noSpice = false

    @Option(name: .long, help: "Read the SPICE ticket from this file (default: generate one, stored 0600 in the state directory).")
    var spicePasswordFile: String?

    @Flag(name: .long, help: "Let SPICE clients in without a ticket.")
    var spiceInsecure = false

    @Option(name: .long, help: "TLS certificate for SPICE (TLS listens on the SPICE port + 1).")
    var spiceTLSCert: String?

    @Option(name: .long, help: "TLS private key for SPICE.")
    var spiceTLSKey: String?

    @Option(name: .long, help: "CA certificate for SPICE TLS (default: the certificate).")
    var spiceTLSCA: String?

    @Flag(name: .long, help: "Boot without ACPI: no power button; the guest powers off through pvpanic.")
    var noACPI = false

    @Flag(name: .long, help: ArgumentHelp(
        "Run without seccomp: QEMU without -sandbox, spice-server's worker thread unfiltered.",
        discussion: "By default QEMU runs under its own seccomp sandbox (no exec, no setuid, no scheduler changes) and the thread that decodes SPICE display clients may not exec, open files or create sockets. 'hostvmm status' shows both."))
    var noSandbox = false

    @Flag(name: .long, inversion: .prefixedNo,
          help: "A virtio keyboard, tablet and mouse served by hostvmm (vhost-user-input), fed by SPICE clients.")
    var inputs = true

    @Flag(name: .long, inversion: .prefixedNo,
          help: "A virtio-gpu served by hostvmm (vhost-user-gpu), shown on the SPICE display; a client's window size becomes the guest's mode.")
    var display = true

    @Option(name: .long, help: ArgumentHelp(
        "Sound: auto, spice, pulse, spice+pulse or none.",
        discussion: "A virtio-snd served by hostvmm (vhost-user-snd). auto: SPICE clients hear the guest and lend it their microphone, "
            + "and so does the host's PulseAudio when a server answers at start-up (up says which); none: no sound device."))
    var audio: String = "auto"

    @Option(name: .long, help: "PulseAudio server for --audio, in libpulse's syntax (default: libpulse's, e.g. $PULSE_SERVER).")
    var pulseServer: String?

    @Option(name: .long, help: ArgumentHelp(
        "SPICE usbredir channels: how many USB devices clients can redirect at once (0: none).",
        discussion: "Channel N is on the xHCI controller for even N, on the EHCI controller for odd N."))
    var usbRedir: Int = USBSetup().redirChannels

    @Option(name: .long, help: ArgumentHelp(
        "What SPICE clients may redirect, in usbredir's filter syntax: class,vendor,product,version,allow rules joined by |.",
        discussion: "As spice-gtk and QEMU's usb-redir filter= take it (-1: any; ':' also separates fields). The first "
            + "matching rule decides; a device no rule matches is refused. Example: '0x03,-1,-1,-1,0|-1,-1,-1,-1,1' (no HID)."))
    var usbFilter: String?

    @Flag(name: .long, help: "No USB controllers, no usbredir channels, no host devices.")
    var noUSB = false

    @Option(name: .long, help: ArgumentHelp(
        "The network: user, none, bridge:NAME or tap:NAME.",
        discussion: "user (default): QEMU's user-mode network; the guest gets 10.0.2.15 by DHCP and reaches the host "
            + "as 10.0.2.2. bridge:NAME joins a host bridge through qemu-bridge-helper; tap:NAME uses an existing tap device."))
    var net: String = "user"

    @Option(name: .long, help: ArgumentHelp(
        "Forward a port of the host's loopback to the guest: tcp:HOSTPORT:GUESTPORT or udp:... (repeatable; --net user).",
        discussion: "Example: --forward tcp:2222:22 makes 'ssh -p 2222 127.0.0.1' reach the guest's port 22."))
    var forward: [String] = []

    @Flag(name: .long, help: "No virtio-rng (by default the guest's entropy comes from the host's /dev/urandom).")
    var noRNG = false

    @Option(name: .long, help: "Crash bundles to keep (newest first).")
    var keepCrashes: Int = 5

    @Option(name: .long, help: "Guest memory in a crash bundle: elf, kdump-zlib (compressed) or none.")
    var vmcore: String = VMCoreFormat.elf.rawValue

    func validate() throws {
        do { try VMConfig.validate(name: name) } catch { throw ValidationError(error.description) }
        guard (1...64).contains(cpus) else { throw ValidationError("--cpus must be from 1 to 64") }
        guard ["auto", "kvm", "tcg"].contains(accel) else { throw ValidationError("--accel must be auto, kvm or tcg") }
        guard (kernel == nil) == (initrd == nil) else { throw ValidationError("--kernel and --initrd go together") }
        guard let kind = GuestImageKind(rawValue: image ?? GuestImageKind.default.rawValue) else {
            throw ValidationError("--image must be one of \(GuestImageKind.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        if rootDisk != nil && kernel == nil { throw ValidationError("--root-disk needs --kernel and --initrd") }
        if kernel != nil && kind != .default && rootDisk == nil {
            throw ValidationError("--image \(kind.rawValue) with --kernel needs its --root-disk")
        }
        guard let firmwareChoice = Firmware(rawValue: firmware) else { throw ValidationError("--firmware must be bios or uefi") }
        if !bootsFromDisk && (firmwareChoice != .bios || snapshot && disk.isEmpty) {
            throw ValidationError(firmwareChoice != .bios
                ? "--firmware applies when the VM boots from a disk (--disk or --cdrom without --image, --kernel)"
                : "--snapshot needs --disk")
        }
        for d in disk { do { _ = try DiskSetup.inspect(d) } catch { throw ValidationError(error.description) } }
        if let cdrom, access(cdrom, R_OK) != 0 { throw ValidationError("--cdrom \(cdrom): not readable") }
        if firmwareChoice == .uefi && access(Firmware.ovmfCode, R_OK) != 0 {
            throw ValidationError("--firmware uefi needs \(Firmware.ovmfCode): apt-get install \(Firmware.ovmfPackage)")
        }
        guard PanicPolicy(rawValue: onPanic) != nil else {
            throw ValidationError("--on-panic must be one of \(PanicPolicy.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        do { _ = try AudioSetup.parse(audio) } catch { throw ValidationError(error.description) }
        guard (0...USBSetup.maxRedirChannels).contains(usbRedir) else {
            throw ValidationError("--usb-redir must be from 0 to \(USBSetup.maxRedirChannels)")
        }
        if let usbFilter {
            do { _ = try USBRedirFilter(parsing: usbFilter) } catch { throw ValidationError(error.description) }
        }
        do {
            let mode = try NetworkSetup.parseMode(net)
            for f in forward { _ = try NetworkSetup.Forward.parse(f) }
            if !forward.isEmpty && mode != .user { throw VMConfigError.outOfRange("--forward needs --net user") }
        } catch { throw ValidationError("\(error)") }
        guard VMCoreFormat(rawValue: vmcore) != nil else { throw ValidationError("--vmcore must be elf, kdump-zlib or none") }
        guard (1...1000).contains(keepCrashes) else { throw ValidationError("--keep-crashes must be from 1 to 1000") }
        do { _ = try SpiceSetup.parseListen(spice) } catch { throw ValidationError(error.description) }
        guard (spiceTLSCert == nil) == (spiceTLSKey == nil) else {
            throw ValidationError("--spice-tls-cert and --spice-tls-key go together")
        }
        if spiceInsecure && spicePasswordFile != nil {
            throw ValidationError("--spice-insecure and --spice-password-file exclude each other")
        }
        let bytes: UInt64
        do { bytes = try VMConfig.parseSize(memoryText) } catch { throw ValidationError(error.description) }
        guard bytes >= 128 << 20 else { throw ValidationError("--memory must be at least 128M") }
        guard bytes <= 64 << 30 else { throw ValidationError("--memory must be at most 64G") }
    }

    private var kind: GuestImageKind { GuestImageKind(rawValue: image ?? "") ?? .default }
    /// No image, no kernel, but a disk or CD-ROM: the firmware boots it.
    private var bootsFromDisk: Bool { image == nil && kernel == nil && (!disk.isEmpty || cdrom != nil) }
    private var memoryText: String { memory ?? kind.defaultMemory }

    func run() throws {
        let qemuBinary: QEMUBinary
        do { qemuBinary = try QEMUBinary.locate(explicitPath: qemu) } catch { fail(error.description) }
        let state = StateDirectory.forVM(name)
        if (try? ControlClient(vmName: name, state: state)) != nil {
            fail("VM '\(name)' is already running; 'hostvmm status \(name)' shows it, 'hostvmm down \(name)' stops it")
        }

        var kernelPath = kernel
        var initrdPath = initrd
        var diskPath = rootDisk
        if kernelPath == nil && !bootsFromDisk {
            do {
                let built = try kind.build(agentPath: agent) { line in say(line) }
                kernelPath = built.kernel
                initrdPath = built.initrd
                diskPath = built.disk
            } catch {
                fail("cannot build the guest image: \(error)")
            }
        }

        if detach {
            try runDetached(kernel: kernelPath, initrd: initrdPath, rootDisk: diskPath, state: state)
            return
        }

        let accelerator: AcceleratorChoice = accel == "auto" ? .detect() : .forced(accel == "kvm" ? .kvm : .tcg)
        var config = VMConfig(
            name: name, memoryBytes: try VMConfig.parseSize(memoryText), cpus: cpus, accelerator: accelerator,
            kernelPath: kernelPath, initrdPath: initrdPath, qemuPath: qemuBinary.path)
        config.rootDisk = diskPath
        config.disks = try disk.map { try DiskSetup.inspect($0) }
        config.snapshot = snapshot
        config.cdrom = cdrom
        config.firmware = Firmware(rawValue: firmware) ?? .bios
        // UEFI's boot entries live with the definition when there is one, else with this run.
        config.uefiVars = VMDefinition.exists(name) ? "\(VMDefinition.directory())/\(name).OVMF_VARS.fd" : state.uefiVars
        config.acpi = !noACPI
        config.sandbox = !noSandbox
        config.inputs = inputs
        config.display = display
        config.audio = try AudioSetup.parse(audio)
        config.audio.pulseServer = pulseServer
        if noSpice { config.audio.spice = false }
        config.usb.controllers = !noUSB
        config.usb.redirChannels = noUSB ? 0 : usbRedir
        config.usb.filter = try usbFilter.map { try USBRedirFilter(parsing: $0) }
        config.network.mode = try NetworkSetup.parseMode(net)
        config.network.forwards = try forward.map { try NetworkSetup.Forward.parse($0) }
        config.rng = !noRNG
        // Window sizes come only from SPICE clients: without SPICE, no D-Bus display (nor its probe).
        if display && !noSpice {
            config.displayConsole = qemuBinary.hasDBusDisplay()
            say(config.displayConsole
                ? "display: a client's window size reaches the running guest (through QEMU's D-Bus display)"
                : "display: QEMU has no D-Bus display (Debian package \(QEMUBinary.dbusDisplayPackage)); "
                    + "a client's window size reaches the guest only at its next display probe (reboot)")
        }
        if noSpice {
            config.spice = nil
        } else {
            var setup = SpiceSetup()
            setup.listen = try SpiceSetup.parseListen(spice)
            setup.passwordFile = spicePasswordFile
            setup.insecure = spiceInsecure
            setup.tlsCert = spiceTLSCert
            setup.tlsKey = spiceTLSKey
            setup.tlsCA = spiceTLSCA
            config.spice = setup
        }
        config.panic = PanicSettings(policy: PanicPolicy(rawValue: onPanic)!, keepBundles: keepCrashes,
                                     vmcore: VMCoreFormat(rawValue: vmcore)!)
        say("QEMU \(qemuBinary.version.major).\(qemuBinary.version.minor).\(qemuBinary.version.micro) at \(qemuBinary.path)")
        throw ExitCode(VMRunner.run(config: config, state: state))
    }

    /// Starts `hostvmm up` again in its own session with the image already
    /// built, output to hostvmm.log, then waits for the agent.
    private func runDetached(kernel: String?, initrd: String?, rootDisk: String?, state: StateDirectory) throws {
        try state.create()
        var args = [CommandLine.arguments[0], "up", "--name", name, "--memory", memoryText, "--cpus", String(cpus),
                    "--accel", accel, "--on-panic", onPanic,
                    "--keep-crashes", String(keepCrashes), "--vmcore", vmcore, "--spice", spice]
        if let kernel, let initrd { args += ["--image", kind.rawValue, "--kernel", kernel, "--initrd", initrd] }
        args += disk.flatMap { ["--disk", $0] } + ["--firmware", firmware]
        args += snapshot ? ["--snapshot"] : []
        if let cdrom { args += ["--cdrom", cdrom] }
        args += noACPI ? ["--no-acpi"] : []
        args += noSandbox ? ["--no-sandbox"] : []
        args += [inputs ? "--inputs" : "--no-inputs", display ? "--display" : "--no-display"]
        args += noSpice ? ["--no-spice"] : []
        args += ["--audio", audio, "--usb-redir", String(usbRedir)]
        args += noUSB ? ["--no-usb"] : []
        args += ["--net", net] + forward.flatMap { ["--forward", $0] }
        args += noRNG ? ["--no-rng"] : []
        args += spiceInsecure ? ["--spice-insecure"] : []
        for (flag, value) in [("--spice-password-file", spicePasswordFile), ("--spice-tls-cert", spiceTLSCert),
                              ("--spice-tls-key", spiceTLSKey), ("--spice-tls-ca", spiceTLSCA),
                              ("--pulse-server", pulseServer), ("--usb-filter", usbFilter)] {
            if let value { args += [flag, value] }
        }
        if let qemu { args += ["--qemu", qemu] }
        if let rootDisk { args += ["--root-disk", rootDisk] }
        let logFD = try state.openLog(state.hostvmmLog)
        let devNull = open("/dev/null", O_RDONLY | O_CLOEXEC)
        let pid = try Subprocess.spawn(args, stdin: devNull, stdout: logFD, stderr: logFD, detach: .session)
        close(logFD)
        close(devNull)
        say("started in the background (pid \(pid)); log: \(state.hostvmmLog)")

        let deadline = Date().addingTimeInterval(readyTimeout)
        var client: ControlClient?
        while client == nil {
            if let status = Subprocess.poll(pid) { failWithLog("hostvmm \(status) before it was ready", state) }
            if Date() > deadline { failWithLog("the control socket did not appear within \(readyTimeout) s", state) }
            client = try? ControlClient(vmName: name, state: state)
            if client == nil { Syscall.pause(milliseconds: 100) }
        }
        guard let client else { return }
        let status = try client.execute("query-status")
        if status["agent"]?["ready"]?.boolValue == true {
            say("agent ready after \(status["agent"]?["ready-after-seconds"]?.doubleValue ?? 0) s")
            return
        }
        while true {
            let remaining = deadline.timeIntervalSinceNow
            if remaining <= 0 { failWithLog("the guest agent did not answer within \(readyTimeout) s", state) }
            let event: [String: Any]?
            do {
                event = try client.nextEvent(timeout: remaining).map { ["event": $0["event"]?.stringValue ?? "", "data": $0["data"] as Any] }
            } catch {
                failWithLog("the guest agent did not answer within \(readyTimeout) s", state)
            }
            guard let event else { failWithLog("the VM stopped before its agent was ready", state) }
            if event["event"] as? String == "agent-ready" {
                let s = try client.execute("query-status")
                say("agent ready after \(s["agent"]?["ready-after-seconds"]?.doubleValue ?? 0) s")
                return
            }
        }
    }

    private func failWithLog(_ message: String, _ state: StateDirectory) -> Never {
        let tail = (try? String(contentsOfFile: state.hostvmmLog, encoding: .utf8))?
            .split(separator: "\n").suffix(15).joined(separator: "\n") ?? ""
        fail("\(message)\n--- \(state.hostvmmLog) ---\n\(tail)")
    }
}

func say(_ line: String) {
    _ = Syscall.writeAll(fd: 1, Array("hostvmm: \(line)\n".utf8))
}

func fail(_ message: String, code: Int32 = 1) -> Never {
    _ = Syscall.writeAll(fd: 2, Array("hostvmm: error: \(message)\n".utf8))
    exit(code)
}
