import VirtioInput

/// Builds QEMU's argument vector for a VM (issue 2 §3). Pure: tests read it.
///
/// Every chardev is a unix socket in the state directory that *hostvmm*
/// listens on; QEMU connects as a client and reconnects if hostvmm drops the
/// connection, so the sockets belong to hostvmm and sit in its 0700 directory.
/// The exception is usb-redir's: QEMU listens there and hostvmm connects while a
/// SPICE client (or a host device) is redirecting, because QEMU's usb-redir starts
/// a usbredir session at each open and unplugs the device at each close.
public enum QEMUCommandLine {
    /// Device ids used in QMP events (VSERPORT_CHANGE carries them).
    public static let agentPortID = "channel-qga"
    public static let spiceAgentPortID = "channel-vdagent"
    public static let agentPortName = "org.qemu.guest_agent.0"
    public static let spiceAgentPortName = "com.redhat.spice.0"
    public static let reconnectMs = 500
    public static let balloonID = "balloon0"
    public static let rootDiskID = "disk0"
    /// What the kernel is told when the VM has a root disk (the first virtio-blk disk).
    public static let rootDiskArguments = "root=/dev/vda rw"
    /// How often the guest refreshes the balloon's memory statistics.
    public static let balloonStatsIntervalSeconds = 2
    /// QEMU's own seccomp filter (its -sandbox): on, and also denying the
    /// obsolete calls, setuid and friends, fork/exec, and scheduler and
    /// resource changes. Nothing hostvmm asks of QEMU needs them: no helper
    /// programs (no bridge helper, no script-run tap), no CPU pinning.
    public static let sandbox = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"

    /// The input devices (on unless --no-inputs), in PCI order: the tablet for SPICE's
    /// client mouse mode, the mouse for its server mouse mode.
    public static let inputDevices = VirtioInputDevice.Flavour.allCases.map(\.rawValue)
    public static let gpuDeviceID = "gpu0"
    public static let soundDeviceID = "snd0"
    public static func usbRedirID(_ channel: Int) -> String { "usbredir\(channel)" }
    public static func inputDeviceID(_ device: String) -> String { "input-\(device)-dev" }

    /// A person's path inside a QEMU option value: a comma ends the value unless doubled.
    static func qemuValue(_ text: String) -> String { text.replacingOccurrences(of: ",", with: ",,") }

    /// `guestRAMFD`: the descriptor number under which QEMU inherits hostvmm's guest RAM
    /// memfd (GuestRAM); without one QEMU makes its own memfd (the command line tests).
    public static func arguments(config: VMConfig, state: StateDirectory, guestRAMFD: Int32? = nil) -> [String] {
        let memMiB = config.memoryBytes >> 20
        var args = [
            config.qemuPath,
            "-name", "\(config.name),debug-threads=on",
            "-nodefaults", "-no-user-config",
            // The D-Bus display only as the channel that passes window sizes (QEMUDisplayConsole);
            // nobody watches QEMU's own copy of the screen.
            "-display", config.display && config.displayConsole ? "dbus,p2p=yes" : "none",
            "-machine", "q35,memory-backend=ram0",
            "-object", guestRAMFD.map { "memory-backend-file,id=ram0,size=\(memMiB)M,mem-path=/proc/self/fd/\($0),share=on" }
                ?? "memory-backend-memfd,id=ram0,size=\(memMiB)M,share=on",
            "-m", "\(memMiB)M",
            "-smp", "\(config.cpus)",
        ]
        if config.sandbox { args += ["-sandbox", Self.sandbox] }
        switch config.accelerator.kind {
        case .kvm: args += ["-accel", "kvm", "-cpu", "host"]
        case .tcg: args += ["-accel", "tcg", "-cpu", "max"]
        }
        if let kernel = config.kernelPath, let initrd = config.initrdPath {
            args += [
                "-kernel", kernel,
                "-initrd", initrd,
                // SeaBIOS builds ACPI tables itself when QEMU gives none, so "no ACPI"
                // is the guest kernel's choice: acpi=off on its command line.
                // With a display the console also goes to tty0 (fbcon on virtio-gpu); ttyS0 stays
                // last, so it remains /dev/console and the console log keeps everything.
                "-append", (config.display ? "console=tty0 " : "") + config.kernelCommandLine
                    + (config.rootDisk == nil ? "" : " \(rootDiskArguments)") + (config.acpi ? "" : " acpi=off"),
            ]
        } else if config.firmware == .uefi, let vars = config.uefiVars {
            // OVMF's code read-only, this VM's own copy of the variable store writable.
            args += ["-drive", "if=pflash,format=raw,unit=0,readonly=on,file=\(Firmware.ovmfCode)",
                     "-drive", "if=pflash,format=raw,unit=1,file=\(vars)"]
        }
        args += [
            // Serial console to a file hostvmm tails; the kernel's panic text lands there.
            "-chardev", "file,id=serial0,path=\(state.consoleLog)",
            "-serial", "chardev:serial0",
            "-chardev", "socket,id=qmp,path=\(state.qmpSocket),reconnect-ms=\(reconnectMs)",
            "-mon", "chardev=qmp,mode=control",
            "-device", "virtio-serial-pci,id=vser0",
            "-chardev", "socket,id=qga0,path=\(state.agentSocket),reconnect-ms=\(reconnectMs)",
            "-device", "virtserialport,bus=vser0.0,chardev=qga0,name=\(agentPortName),id=\(agentPortID)",
            "-chardev", "socket,id=vdagent0,path=\(state.spiceAgentSocket),reconnect-ms=\(reconnectMs)",
            "-device", "virtserialport,bus=vser0.0,chardev=vdagent0,name=\(spiceAgentPortName),id=\(spiceAgentPortID)",
            "-device", "pvpanic-pci",
            // Freeze on panic so the crash bundle sees the guest as it died; hostvmm applies the policy.
            "-action", "panic=pause",
            "-device", "virtio-balloon-pci,id=\(balloonID),deflate-on-oom=on,free-page-reporting=on,"
                + "guest-stats-polling-interval=\(balloonStatsIntervalSeconds)",
        ]
        if config.inputs {
            // vhost-user: QEMU connects (as a client, at startup, without reconnect-ms:
            // vhost-user-input's realize needs the backend there at once); hostvmm
            // listens before QEMU starts. Guest RAM is already a shared memfd.
            for device in inputDevices {
                args += [
                    "-chardev", "socket,id=input-\(device),path=\(state.inputSocket(device))",
                    "-device", "vhost-user-input-pci,chardev=input-\(device),id=\(inputDeviceID(device))",
                ]
            }
        }
        if config.display {
            // As the inputs: hostvmm listens before QEMU starts; QEMU's realize talks to
            // the backend at once. max_outputs=1: our device has one scanout.
            // queue_reset=off: virtio-pci offers VIRTIO_F_RING_RESET by default and
            // vhost-user-gpu, unlike vhost-user-input, does not mask it by the backend's
            // features, so QEMU would ack bit 40 in SET_FEATURES, which we never offered.
            args += [
                "-chardev", "socket,id=gpu,path=\(state.gpuSocket)",
                "-device", "vhost-user-gpu-pci,chardev=gpu,id=\(gpuDeviceID),max_outputs=1,queue_reset=off",
            ]
        }
        if config.audio.device {
            // As the display: hostvmm listens before QEMU starts. vhost-user-base passes the
            // backend's feature bits through; queue_reset=off keeps virtio-pci's RING_RESET
            // out of them whatever a QEMU version adds, as for the GPU.
            args += [
                "-chardev", "socket,id=snd,path=\(state.soundSocket)",
                "-device", "vhost-user-snd-pci,chardev=snd,id=\(soundDeviceID),queue_reset=off",
            ]
        }
        if config.usb.controllers {
            args += ["-device", "qemu-xhci,id=\(USBSetup.Controller.xhci.rawValue)",
                     "-device", "usb-ehci,id=\(USBSetup.Controller.ehci.rawValue)"]
            // One usb-redir per SPICE usbredir channel (VMUSB joins them). The filter is
            // QEMU's to apply: it tells the client (filter_filter) and refuses what fails it.
            let filter = config.usb.filter.map { ",filter=\($0.qemuProperty)" } ?? ""
            for channel in 0..<(config.spice == nil ? 0 : config.usb.redirChannels) {
                let id = usbRedirID(channel)
                let bus = USBSetup.bus(USBSetup.controller(forChannel: channel))
                args += [
                    "-chardev", "socket,id=\(id),path=\(state.usbRedirSocket(channel)),server=on,wait=off",
                    "-device", "usb-redir,chardev=\(id),id=\(id),bus=\(bus)\(filter)",
                ]
            }
        }
        args += config.network.qemuArguments(vmName: config.name)
        if config.rng {
            // The guest's entropy from the host's /dev/urandom (never blocks, as the kernel's own pool).
            args += ["-object", "rng-random,id=rng0,filename=/dev/urandom", "-device", "virtio-rng-pci,rng=rng0,id=rng0dev"]
        }
        if config.rootDisk != nil {
            // The overlay, not the cached image (DiskOverlay). cache=unsafe: the
            // overlay is deleted when QEMU exits, so the guest's flushes
            // would buy nothing but time; discard=unmap lets fstrim shrink it.
            args += [
                "-drive", "file=\(state.diskOverlay),if=none,id=\(rootDiskID),format=qcow2,cache=unsafe,discard=unmap",
                "-device", "virtio-blk-pci,drive=\(rootDiskID),id=vda",
            ]
        }
        // A person's disks: the file itself (cache=writeback: the guest's flushes reach it), or
        // with --snapshot a throwaway overlay (VirtualMachine makes them). The firmware boots
        // the first one when there is no kernel to load.
        let firmwareBoot = config.kernelPath == nil
        for (i, disk) in config.disks.enumerated() {
            let id = "disk\(i + 1)"
            let file = config.snapshot ? state.diskSnapshot(i) : disk.path
            let format = config.snapshot ? "qcow2" : disk.format.rawValue
            args += [
                "-drive", "file=\(qemuValue(file)),if=none,id=\(id),format=\(format),cache=writeback,discard=unmap",
                "-device", "virtio-blk-pci,drive=\(id),id=\(id)dev" + (firmwareBoot && i == 0 ? ",bootindex=0" : ""),
            ]
        }
        if let iso = config.cdrom {
            // On q35's built-in AHCI; booted when no disk is (an installer's first boot).
            args += ["-drive", "file=\(qemuValue(iso)),if=none,id=cd0,media=cdrom,readonly=on",
                     "-device", "ide-cd,drive=cd0,bus=ide.0,id=cd0dev" + (firmwareBoot ? ",bootindex=\(config.disks.isEmpty ? 0 : 1)" : "")]
        }
        return args
    }
}
