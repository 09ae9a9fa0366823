import AgentProtocol
import LinuxSystem
#if canImport(Glibc)
import Glibc
#endif

/// guest-shutdown (protocols.md §1.8). Like qemu-ga it runs the system's
/// `shutdown` program and says nothing on success: the host learns of success
/// from QMP `SHUTDOWN`/`RESET`. Guests without `/sbin/shutdown` (busybox, our
/// embedded image) get busybox's `poweroff`/`halt`/`reboot`, which ask init.
enum ShutdownCommand {
    enum Mode: String {
        case powerdown, halt, reboot
    }

    static let specs: [CommandSpec] = [
        CommandSpec(name: "guest-shutdown", successResponse: false) { args, _ throws(QGAError) in
            let modeName = try args.optionalString("mode") ?? "powerdown"
            try args.finish()
            guard let mode = Mode(rawValue: modeName) else {
                throw .generic("mode is invalid (valid values are: halt|powerdown|reboot")
            }
            try run(argv: command(for: mode))
            return .noReply
        }
    ]

    static func command(for mode: Mode) -> [String] {
        if access("/sbin/shutdown", X_OK) == 0 {
            let flag: [String]
            switch mode {
            case .powerdown: flag = ["-h", "-P"]
            case .halt: flag = ["-h", "-H"]
            case .reboot: flag = ["-r"]
            }
            return ["/sbin/shutdown"] + flag + ["+0", "hypervisor initiated shutdown"]
        }
        switch mode {
        case .powerdown: return ["/sbin/poweroff"]
        case .halt: return ["/sbin/halt"]
        case .reboot: return ["/sbin/reboot"]
        }
    }

    private static func run(argv: [String]) throws(QGAError) {
        guard access(argv[0], X_OK) == 0 else { throw .generic("failed to execute child process '\(argv[0])'") }
        let status: ExitStatus
        do {
            status = try Subprocess.run(argv, environment: ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"])
        } catch {
            throw .generic("failed to execute child process '\(argv[0])': \(error)")
        }
        guard status.isSuccess else { throw .generic("child process has failed to shutdown") }
    }
}
