import Foundation

/// What `hostvmm up` was asked for, with defaults a person would expect.
public struct VMConfig: Sendable {
    public static let defaultName = "default"
    public static let defaultMemoryBytes: UInt64 = 512 << 20
    public static let defaultCPUs = 2

    public var name: String = defaultName
    public var memoryBytes: UInt64 = defaultMemoryBytes
    public var cpus: Int = defaultCPUs
    public var accelerator: AcceleratorChoice
    /// The kernel and initramfs QEMU loads directly (the embedded images); nil: the
    /// firmware boots from the first disk (or the CD-ROM).
    public var kernelPath: String?
    public var initrdPath: String?
    /// A raw root disk image (the desktop guest's), or nil for an initramfs-only
    /// guest. The VM never writes it: it boots a qcow2 overlay of it in its
    /// state directory, as /dev/vda, with `root=/dev/vda rw`.
    public var rootDisk: String?
    public var kernelCommandLine: String = "console=ttyS0 loglevel=4 panic=-1"
    public var qemuPath: String
    public var panic = PanicSettings()
    /// Without ACPI there is no power button; the guest powers off through
    /// pvpanic (its low-priority poweroff handler is then the only one), which
    /// QEMU reports as GUEST_PVSHUTDOWN.
    public var acpi = true
    /// QEMU's seccomp sandbox (QEMUCommandLine.sandbox) and the seccomp filter on
    /// spice-server's worker thread (ThreadSandbox); --no-sandbox turns both off.
    public var sandbox = true
    /// A virtio keyboard and tablet served by hostvmm over vhost-user (--inputs).
    public var inputs = false
    /// A virtio-gpu (2D) served by hostvmm over vhost-user, shown through SPICE (--display).
    public var display = false
    /// With `display`: QEMU runs its D-Bus display (`-display dbus,p2p=yes`) so a
    /// client's window size reaches the running guest (QEMUDisplayConsole). Off
    /// when QEMU lacks the module; then the size applies at the guest's next probe.
    public var displayConsole = false
    /// The virtio-snd device and where its sound goes (--audio).
    public var audio = AudioSetup()
    /// nil: no SPICE server (--no-spice).
    public var spice: SpiceSetup? = SpiceSetup()
    /// USB controllers, SPICE usbredir channels and their filter (--usb-redir, --usb-filter, --no-usb).
    public var usb = USBSetup()
    /// The NIC and how it reaches the world (--net, --forward).
    public var network = NetworkSetup()
    /// A virtio-rng fed from the host's /dev/urandom (--no-rng turns it off).
    public var rng = true
    /// A person's disks (--disk), after `rootDisk` if there is one.
    public var disks: [DiskSetup] = []
    /// Every disk behind a throwaway overlay (--snapshot).
    public var snapshot = false
    /// An ISO as a CD-ROM (--cdrom), e.g. an installer.
    public var cdrom: String?
    /// Firmware when there is no kernel to load (--firmware).
    public var firmware = Firmware.bios
    /// UEFI's variable store for this VM (boot entries persist in it); made from OVMF's
    /// template when missing.
    public var uefiVars: String?

    public init(name: String, memoryBytes: UInt64, cpus: Int, accelerator: AcceleratorChoice, kernelPath: String?,
                initrdPath: String?, qemuPath: String) {
        self.name = name
        self.memoryBytes = memoryBytes
        self.cpus = cpus
        self.accelerator = accelerator
        self.kernelPath = kernelPath
        self.initrdPath = initrdPath
        self.qemuPath = qemuPath
    }

    /// VM names become directory and socket names: keep them boring.
    public static func validate(name: String) throws(VMConfigError) {
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
        guard !name.isEmpty, name.count <= 40, name.allSatisfy(allowed.contains), !name.hasPrefix(".") else {
            throw .invalidName(name)
        }
    }

    /// Parses sizes like `512M`, `2G`, `1.5G`, `1048576K`; a bare number is MiB (as QEMU's -m).
    public static func parseSize(_ text: String) throws(VMConfigError) -> UInt64 {
        let t = text.trimmingCharacters(in: .whitespaces)
        guard let last = t.last else { throw .invalidSize(text) }
        let units: [Character: UInt64] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40]
        var number = Substring(t)
        var multiplier: UInt64 = 1 << 20
        if let u = units[Character(last.uppercased())] {
            multiplier = u
            number = t.dropLast()
            if number.last == "i" || number.last == "I" { throw .invalidSize(text) }
        } else if last == "B" || last == "b" {
            let body = t.dropLast()
            if let l = body.last, let u = units[Character(l.uppercased())] {
                multiplier = u
                number = body.dropLast()
            } else {
                multiplier = 1
                number = body
            }
        }
        guard let value = Double(number), value > 0, value.isFinite else { throw .invalidSize(text) }
        let bytes = value * Double(multiplier)
        guard bytes < Double(UInt64.max) else { throw .invalidSize(text) }
        return UInt64(bytes)
    }
}

public enum VMConfigError: Error, CustomStringConvertible {
    case invalidName(String)
    case invalidSize(String)
    case outOfRange(String)

    public var description: String {
        switch self {
        case .invalidName(let n):
            return "invalid VM name '\(n)': use 1-40 letters, digits, '-', '_' or '.', not starting with '.'"
        case .invalidSize(let s):
            return "invalid size '\(s)': use a number with an optional K, M, G or T suffix (e.g. 512M, 2G)"
        case .outOfRange(let s):
            return s
        }
    }
}
