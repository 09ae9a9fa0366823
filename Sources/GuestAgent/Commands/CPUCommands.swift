import AgentProtocol
import LinuxSystem
#if canImport(Glibc)
import Glibc
#endif

/// guest-get-vcpus, guest-set-vcpus, guest-get-cpustats (sysfs and /proc/stat).
enum CPUCommands {
    static let cpuRoot = "/sys/devices/system/cpu"

    static let specs: [CommandSpec] = [
        CommandSpec(name: "guest-get-vcpus") { args, _ throws(QGAError) in
            try args.finish()
            let count = max(1, sysconf(Int32(_SC_NPROCESSORS_CONF)))
            var cpus: [JSONValue] = []
            for id in 0..<count {
                let dir = "\(cpuRoot)/cpu\(id)"
                guard FileIO.isDirectory(dir) else { continue }
                // No "online" file: the CPU cannot be taken offline (typically cpu0).
                let onlineFile = "\(dir)/online"
                let online = FileIO.readLine(onlineFile).map { $0 == "1" } ?? true
                cpus.append(.object([
                    "logical-id": .int(Int64(id)), "online": .bool(online),
                    "can-offline": .bool(access(onlineFile, W_OK) == 0),
                ]))
            }
            return .reply(.array(cpus))
        },
        CommandSpec(name: "guest-set-vcpus") { args, _ throws(QGAError) in
            let list = try args.array("vcpus")
            try args.finish()
            var processed: Int64 = 0
            for (position, item) in list.enumerated() {
                var entry = try QGAArguments.element(item, of: "vcpus", at: position)
                let id = try entry.int("logical-id")
                let online = try entry.bool("online")
                try entry.finish()
                do throws(QGAError) {
                    try setOnline(cpu: id, online: online)
                } catch {
                    // Like qemu-ga: report how far it got, or the error if nothing was done.
                    if processed > 0 { return .reply(.int(processed)) }
                    throw error
                }
                processed += 1
            }
            return .reply(.int(processed))
        },
        CommandSpec(name: "guest-get-cpustats") { args, _ throws(QGAError) in
            try args.finish()
            return .reply(.array(try cpuStats()))
        },
    ]

    private static func setOnline(cpu id: Int64, online: Bool) throws(QGAError) {
        let dir = "\(cpuRoot)/cpu\(id)"
        guard id >= 0, FileIO.isDirectory(dir) else {
            throw .generic("open(\"\(dir)/\"): No such file or directory")
        }
        let file = "\(dir)/online"
        guard FileIO.exists(file) else {
            if online { return }  // always online
            throw .generic("logical processor #\(id) can't be offlined")
        }
        let current = FileIO.readLine(file) == "1"
        if current == online { return }
        do { try FileIO.writeString(file, online ? "1" : "0") } catch {
            throw .generic("failed to \(online ? "online" : "offline") logical processor #\(id): \(error)")
        }
    }

    /// /proc/stat per-CPU lines; jiffies become milliseconds, as qemu-ga reports them.
    private static func cpuStats() throws(QGAError) -> [JSONValue] {
        guard let text = FileIO.readText("/proc/stat") else { throw .generic("cannot read /proc/stat") }
        let msPerTick = Int64(1000 / max(1, sysconf(Int32(_SC_CLK_TCK))))
        let names = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal", "guest", "guestnice"]
        var result: [JSONValue] = []
        for line in text.split(separator: "\n") where line.hasPrefix("cpu") && !line.hasPrefix("cpu ") {
            let fields = line.split(separator: " ")
            guard let cpu = Int64(fields[0].dropFirst(3)) else { continue }
            var stat: JSONObject = ["type": "linux", "cpu": .int(cpu)]
            for (name, value) in zip(names, fields.dropFirst()) {
                if let v = Int64(value) { stat[name] = .int(v * msPerTick) }
            }
            result.append(.object(stat))
        }
        return result
    }
}
