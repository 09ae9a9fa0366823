import AgentProtocol
import LinuxSystem
#if canImport(Glibc)
import Glibc
#endif

/// guest-shutdown and guest-suspend-* (protocols.md §1.8). Silent on success:
/// the host learns of it from QMP (SHUTDOWN, RESET, SUSPEND).
enum PowerCommands {
    enum ShutdownMode: String {
        case powerdown, halt, reboot
    }

    static let specs: [CommandSpec] = [
        CommandSpec(name: "guest-shutdown", successResponse: false) { args, _ throws(QGAError) in
            let modeName = try args.optionalString("mode") ?? "powerdown"
            try args.finish()
            guard let mode = ShutdownMode(rawValue: modeName) else {
                throw .generic("mode is invalid (valid values are: halt|powerdown|reboot")
            }
            let argv = shutdownCommand(for: mode)
            try runChild(argv, failure: "shutdown")
            return .noReply
        },
        suspend("guest-suspend-ram", sysfsState: "mem", systemctlVerb: "suspend"),
        suspend("guest-suspend-disk", sysfsState: "disk", systemctlVerb: "hibernate"),
        suspend("guest-suspend-hybrid", sysfsState: "disk", systemctlVerb: "hybrid-sleep", diskMode: "suspend"),
    ]

    /// Like qemu-ga: the system's `shutdown`; on guests without it (busybox, our
    /// embedded image) busybox's `poweroff`/`halt`/`reboot`, which ask init.
    static func shutdownCommand(for mode: ShutdownMode) -> [String] {
        if access("/sbin/shutdown", X_OK) == 0 {
            let flags: [String]
            switch mode {
            case .powerdown: flags = ["-h", "-P"]
            case .halt: flags = ["-h", "-H"]
            case .reboot: flags = ["-r"]
            }
            return ["/sbin/shutdown"] + flags + ["+0", "hypervisor initiated shutdown"]
        }
        switch mode {
        case .powerdown: return ["/sbin/poweroff"]
        case .halt: return ["/sbin/halt"]
        case .reboot: return ["/sbin/reboot"]
        }
    }

    static func runChild(_ argv: [String], failure action: String) throws(QGAError) {
        guard access(argv[0], X_OK) == 0 else { throw .generic("failed to execute child process '\(argv[0])'") }
        let status: ExitStatus
        do {
            status = try Subprocess.run(argv, environment: ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"])
        } catch {
            throw .generic("failed to execute child process '\(argv[0])': \(error)")
        }
        guard status.isSuccess else { throw .generic("child process has failed to \(action)") }
    }

    /// systemd's `systemctl VERB` where systemd runs, else the kernel's
    /// /sys/power interface. Writing /sys/power/state blocks until resume, so
    /// it happens on its own thread; the host sees QMP SUSPEND.
    private static func suspend(_ name: String, sysfsState: String, systemctlVerb: String, diskMode: String? = nil)
        -> CommandSpec
    {
        CommandSpec(name: name, successResponse: false) { args, _ throws(QGAError) in
            try args.finish()
            let states = (FileIO.readLine("/sys/power/state") ?? "").split(separator: " ").map(String.init)
            var supported = states.contains(sysfsState)
            if let diskMode, supported {
                supported = (FileIO.readLine("/sys/power/disk") ?? "").containsBytes(diskMode)
            }
            guard supported else { throw .generic("the requested suspend mode is not supported by the guest") }
            if FileIO.exists("/run/systemd/system"), access("/bin/systemctl", X_OK) == 0 {
                try runChild(["/bin/systemctl", systemctlVerb], failure: "suspend")
                return .noReply
            }
            if let diskMode {
                do { try FileIO.writeString("/sys/power/disk", diskMode) } catch {
                    throw .generic("failed to set the hibernation mode: \(error)")
                }
            }
            Threads.detach {
                do { try FileIO.writeString("/sys/power/state", sysfsState) } catch {
                    Log.info("\(name): \(error)")
                }
            }
            return .noReply
        }
    }
}
