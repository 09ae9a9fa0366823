import AgentProtocol
import LinuxSystem
#if canImport(Glibc)
import Glibc
#endif

/// guest-get-time, guest-set-time, guest-get-timezone.
enum TimeCommands {
    static let hwclock = "/sbin/hwclock"

    static let specs: [CommandSpec] = [
        CommandSpec(name: "guest-get-time", runsInline: true) { args, _ throws(QGAError) in
            try args.finish()
            var ts = timespec()
            clock_gettime(CLOCK_REALTIME, &ts)
            return .reply(.int(Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)))
        },
        CommandSpec(name: "guest-set-time") { args, _ throws(QGAError) in
            let time = try args.optionalInt("time")
            try args.finish()
            if let time {
                // Checked here rather than by the kernel: a negative value must
                // never reach settimeofday as "the epoch".
                guard time >= 0 else { throw .generic("Failed to set time to guest: Invalid argument") }
                var tv = timeval(tv_sec: time_t(time / 1_000_000_000), tv_usec: suseconds_t(time % 1_000_000_000 / 1000))
                guard settimeofday(&tv, nil) == 0 else {
                    throw .generic("Failed to set time to guest: \(FileIO.errnoText())")
                }
                // Keep the hardware clock in step when there is one to keep.
                if access(hwclock, X_OK) == 0 {
                    try PowerCommands.runChild([hwclock, "-w"], failure: "set hardware clock")
                }
                return .reply(.object([:]))
            }
            guard access(hwclock, X_OK) == 0 else {
                throw .generic("this feature or command is not currently supported")
            }
            try PowerCommands.runChild([hwclock, "-s"], failure: "set system time")
            return .reply(.object([:]))
        },
        CommandSpec(name: "guest-get-timezone", runsInline: true) { args, _ throws(QGAError) in
            try args.finish()
            var now = time(nil)
            var local = tm()
            localtime_r(&now, &local)
            var info: JSONObject = [:]
            if let zone = local.tm_zone { info["zone"] = .string(String(cString: zone)) }
            info["offset"] = .int(Int64(local.tm_gmtoff))
            return .reply(.object(info))
        },
    ]
}
