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

    /// The input devices (on unless --no-inputs), in PCI order: the tablet for SPICE's
    /// client mouse mode, the mouse for its server mouse mode.
    public static let inputDevices = VirtioInputDevice.Flavour.allCases.map(\.rawValue)
    public static let gpuDeviceID = "gpu0"
    public static let soundDeviceID = "snd0"
    public static func usbRedirID(_ channel: Int) -> String { "usbredir\(channel)" }
    public static func inputDeviceID(_ device: String) -> String { "input-\(device)-dev" }

    public static func arguments(config: VMConfig, state: StateDirectory) -> [String] {
        let memMiB = config.memoryBytes >> 20
        var args = [
            config.qemuPath,
            "-name", "\(config.name),debug-threads=on",
            "-nodefaults", "-no-user-config",
            // The D-Bus display only as the channel that passes window sizes (QEMUDisplayConsole);
            // nobody watches QEMU's own copy of the screen.
            "-display", config.display && config.displayConsole ? "dbus,p2p=yes" : "none",
            "-machine", "q35,memory-backend=ram0",
            "-object", "memory-backend-memfd,id=ram0,size=\(memMiB)M,share=on",
            "-m", "\(memMiB)M",
            "-smp", "\(config.cpus)",
        ]
        switch config.accelerator.kind {
        case .kvm: args += ["-accel", "kvm", "-cpu", "host"]
        case .tcg: args += ["-accel", "tcg", "-cpu", "max"]
        }
        args += [
            "-kernel", config.kernelPath,
            "-initrd", config.initrdPath,
            // SeaBIOS builds ACPI tables itself when QEMU gives none, so "no ACPI"
            // is the guest kernel's choice: acpi=off on its command line.
            // With a display the console also goes to tty0 (fbcon on virtio-gpu); ttyS0 stays
            // last, so it remains /dev/console and the console log keeps everything.
            "-append", (config.display ? "console=tty0 " : "") + config.kernelCommandLine + (config.rootDisk == nil ? "" : " \(rootDiskArguments)")
                + (config.acpi ? "" : " acpi=off"),
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
        return args
    }
}
