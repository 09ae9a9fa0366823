import AgentProtocol
import LinuxSystem
#if canImport(Glibc)
import Glibc
#endif

/// Mounted filesystems backed by block devices, from /proc/self/mountinfo:
/// what fsinfo, fstrim and fsfreeze act on. Virtual filesystems (device major
/// 0: proc, tmpfs, ...) are left out, as qemu-ga leaves them out.
struct Mount: Equatable {
    var mountpoint: String
    var type: String
    var source: String
    var major: UInt32
    var minor: UInt32

    /// Network filesystems are never frozen (qemu-ga skips them too).
    var isNetwork: Bool { ["cifs", "smbfs", "smb3", "nfs", "nfs4", "ceph", "9p", "fuse.sshfs"].contains(type) }

    static func list(mountinfo: String? = FileIO.readText("/proc/self/mountinfo")) -> [Mount] {
        var mounts: [Mount] = []
        for line in (mountinfo ?? "").split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
            guard fields.count >= 10, let dash = fields.firstIndex(of: "-"), dash + 2 < fields.count else { continue }
            let numbers = fields[2].split(separator: ":").compactMap { UInt32($0) }
            guard numbers.count == 2, numbers[0] != 0 else { continue }
            let mountpoint = unescape(fields[4])
            // The same filesystem bind-mounted twice is one filesystem.
            if mounts.contains(where: { $0.major == numbers[0] && $0.minor == numbers[1] }) { continue }
            mounts.append(Mount(mountpoint: mountpoint, type: fields[dash + 1], source: unescape(fields[dash + 2]),
                                major: numbers[0], minor: numbers[1]))
        }
        return mounts
    }

    /// mountinfo escapes space, tab, newline and backslash as \ooo (three octal digits).
    static func unescape(_ s: String) -> String {
        let u = Array(s.utf8)
        var bytes: [UInt8] = []
        var i = 0
        while i < u.count {
            if u[i] == UInt8(ascii: "\\"), i + 3 < u.count,
               let v = UInt8(String(decoding: u[(i + 1)...(i + 3)], as: UTF8.self), radix: 8)
            {
                bytes.append(v)
                i += 4
            } else {
                bytes.append(u[i])
                i += 1
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// Where a block device sits, as QGA's GuestDiskAddress describes it, read from sysfs.
enum DiskAddress {
    /// Kernel name ("vda") of the device with this number; a partition maps to itself.
    static func kernelName(major: UInt32, minor: UInt32) -> String? {
        let link = "/sys/dev/block/\(major):\(minor)"
        guard let resolved = realPath(link) else { return nil }
        return resolved.split(separator: "/").last.map(String.init)
    }

    /// The whole-disk names behind a device: itself, its parent disk for a
    /// partition, or the disks under a device-mapper/md device (slaves).
    static func disks(ofKernelName name: String) -> [String] {
        if FileIO.isDirectory("/sys/block/\(name)") {
            let slaves = FileIO.list("/sys/block/\(name)/slaves")
            if slaves.isEmpty { return [name] }
            return slaves.flatMap { disks(ofKernelName: $0) }
        }
        // A partition: /sys/class/block/vda1 -> .../block/vda/vda1
        guard let path = realPath("/sys/class/block/\(name)") else { return [] }
        let parts = path.split(separator: "/")
        guard parts.count >= 2 else { return [] }
        return disks(ofKernelName: String(parts[parts.count - 2]))
    }

    /// GuestDiskAddress for a whole disk: bus type from its sysfs path, the
    /// PCI function it hangs off and its /dev name.
    static func address(ofDisk name: String) -> JSONValue {
        let path = realPath("/sys/block/\(name)") ?? ""
        var busType = "unknown"
        if path.containsBytes("/virtio") && name.hasPrefix("vd") { busType = "virtio" }
        else if path.containsBytes("/nvme") { busType = "nvme" }
        else if path.containsBytes("/usb") { busType = "usb" }
        else if path.containsBytes("/ata") { busType = "sata" }
        else if path.containsBytes("/host") && path.containsBytes("/target") { busType = "scsi" }
        else if path.containsBytes("/devices/virtual/") { busType = "virtual" }
        var pci = (domain: Int64(0), bus: Int64(0), slot: Int64(0), function: Int64(0))
        // The last "DDDD:BB:SS.F" component is the controller's PCI function.
        for component in path.split(separator: "/").reversed() {
            let p = component.split(whereSeparator: { $0 == ":" || $0 == "." })
            if p.count == 4, component.count == 12, let d = Int64(p[0], radix: 16), let b = Int64(p[1], radix: 16),
               let s = Int64(p[2], radix: 16), let f = Int64(p[3], radix: 16)
            {
                pci = (d, b, s, f)
                break
            }
        }
        let address: JSONObject = [
            "pci-controller": .object([
                "domain": .int(pci.domain), "bus": .int(pci.bus), "slot": .int(pci.slot), "function": .int(pci.function),
            ]),
            "bus-type": .string(busType), "bus": 0, "target": 0, "unit": 0, "dev": .string("/dev/\(name)"),
        ]
        return .object(address)
    }

    static func realPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }
}
