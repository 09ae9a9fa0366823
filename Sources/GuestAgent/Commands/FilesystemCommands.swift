import AgentProtocol
import LinuxSystem
#if canImport(Glibc)
import Glibc
#endif

/// guest-get-fsinfo, guest-get-disks, guest-fstrim, guest-get-diskstats.
enum FilesystemCommands {
    static let specs: [CommandSpec] = [
        CommandSpec(name: "guest-get-fsinfo") { args, _ throws(QGAError) in
            try args.finish()
            return .reply(.array(Mount.list().map(fsInfo)))
        },
        CommandSpec(name: "guest-get-disks") { args, _ throws(QGAError) in
            try args.finish()
            return .reply(.array(disks()))
        },
        CommandSpec(name: "guest-fstrim") { args, _ throws(QGAError) in
            let minimum = try args.optionalInt("minimum") ?? 0
            try args.finish()
            guard minimum >= 0 else { throw .invalidParameter("minimum") }
            return .reply(.object(["paths": .array(Mount.list().map { trim($0, minimum: UInt64(minimum)) })]))
        },
        CommandSpec(name: "guest-get-diskstats") { args, _ throws(QGAError) in
            try args.finish()
            return .reply(.array(try diskStats()))
        },
    ]

    private static func fsInfo(_ mount: Mount) -> JSONValue {
        let name = DiskAddress.kernelName(major: mount.major, minor: mount.minor) ?? mount.source
        var info: JSONObject = ["name": .string(name), "mountpoint": .string(mount.mountpoint), "type": .string(mount.type)]
        var st = statvfs()
        if statvfs(mount.mountpoint, &st) == 0 {
            let unit = Int64(st.f_frsize)
            let used = (Int64(st.f_blocks) - Int64(st.f_bfree)) * unit
            info["used-bytes"] = .int(used)
            info["total-bytes"] = .int(used + Int64(st.f_bavail) * unit)
            info["total-bytes-privileged"] = .int(Int64(st.f_blocks) * unit)
        }
        info["disk"] = .array(DiskAddress.disks(ofKernelName: name).map(DiskAddress.address(ofDisk:)))
        return .object(info)
    }

    /// Whole disks (those with a device behind them, or device-mapper volumes)
    /// and their partitions, as /dev names.
    private static func disks() -> [JSONValue] {
        var result: [JSONValue] = []
        for name in FileIO.list("/sys/block") {
            let dir = "/sys/block/\(name)"
            let slaves = FileIO.list("\(dir)/slaves")
            guard FileIO.exists("\(dir)/device") || !slaves.isEmpty else { continue }
            var disk: JSONObject = [
                "name": .string("/dev/\(name)"), "partition": false,
                "dependencies": .array(slaves.map { .string("/dev/\($0)") }),
            ]
            if slaves.isEmpty { disk["address"] = DiskAddress.address(ofDisk: name) }
            result.append(.object(disk))
            for part in FileIO.list(dir) where part.hasPrefix(name) && FileIO.exists("\(dir)/\(part)/partition") {
                result.append(.object([
                    "name": .string("/dev/\(part)"), "partition": true, "dependencies": .array([.string("/dev/\(name)")]),
                ]))
            }
        }
        return result
    }

    /// FITRIM on one filesystem: `_IOWR('X', 121, struct fstrim_range)`.
    private static let FITRIM: UInt = 0xC018_5879

    private static func trim(_ mount: Mount, minimum: UInt64) -> JSONValue {
        var result: JSONObject = ["path": .string(mount.mountpoint)]
        let fd = open(mount.mountpoint, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            result["error"] = .string("failed to open \(mount.mountpoint): \(FileIO.errnoText())")
            return .object(result)
        }
        defer { close(fd) }
        // struct fstrim_range { u64 start; u64 len; u64 minlen; }
        var range: [UInt64] = [0, UInt64.max, minimum]
        let r = range.withUnsafeMutableBytes { Syscall.ioctl(fd, FITRIM, $0.baseAddress) }
        if r < 0 {
            let code = errno
            // Filesystems that cannot trim are skipped silently, as qemu-ga does.
            if code == ENOTTY || code == EOPNOTSUPP { return .object(result) }
            result["error"] = .string("failed to trim \(mount.mountpoint): \(FileIO.errnoText(code))")
        } else {
            result["trimmed"] = .int(Int64(bitPattern: range[1]))
            result["minimum"] = .int(Int64(bitPattern: range[2]))
        }
        return .object(result)
    }

    /// /proc/diskstats, with QGA's names for however many fields the kernel gives.
    private static func diskStats() throws(QGAError) -> [JSONValue] {
        guard let text = FileIO.readText("/proc/diskstats") else { throw .generic("cannot read /proc/diskstats") }
        let names = ["read-ios", "read-merges", "read-sectors", "read-ticks", "write-ios", "write-merges",
                     "write-sectors", "write-ticks", "ios-pgr", "total-ticks", "weight-ticks", "discard-ios",
                     "discard-merges", "discard-sectors", "discard-ticks", "flush-ios", "flush-ticks"]
        var result: [JSONValue] = []
        for line in text.split(separator: "\n") {
            let f = line.split(separator: " ")
            guard f.count >= 14, let major = Int64(f[0]), let minor = Int64(f[1]) else { continue }
            var stats = JSONObject()
            for (name, value) in zip(names, f.dropFirst(3)) {
                if let v = Int64(value) { stats[name] = .int(v) }
            }
            result.append(.object(["name": .string(String(f[2])), "major": .int(major), "minor": .int(minor),
                                   "stats": .object(stats)]))
        }
        return result
    }
}
