import AgentProtocol
import LinuxSystem
#if canImport(Glibc)
import Glibc
#endif

/// Whether filesystems are frozen. Persisted as `qga.state.isfrozen` in the
/// state directory (qemu-ga's name), so an agent restarted mid-freeze comes
/// back frozen and still refuses everything but thaw (protocols.md §1.6-1.7).
final class FreezeState: @unchecked Sendable {
    private let monitor = Monitor()
    private var frozen = false
    let markerPath: String

    init(stateDir: String) { markerPath = "\(stateDir)/qga.state.isfrozen" }

    var isFrozen: Bool { monitor.withLock { frozen } }

    func set(_ value: Bool) {
        monitor.withLock {
            frozen = value
            if value {
                try? FileIO.writeAtomically(markerPath, [], mode: 0o600)
            } else {
                unlink(markerPath)
            }
        }
    }

    func recoverAfterRestart() {
        if FileIO.exists(markerPath) {
            monitor.withLock { frozen = true }
            Log.info("filesystems were frozen when the agent last ran: only thaw is accepted until then")
        }
    }
}

/// guest-fsfreeze-status, -freeze, -freeze-list, -thaw (FIFREEZE/FITHAW) with
/// the fsfreeze hook.
enum FreezeCommands {
    /// `_IOWR('X', 119, int)` and `_IOWR('X', 120, int)`.
    static let FIFREEZE: UInt = 0xC004_5877
    static let FITHAW: UInt = 0xC004_5878

    static let specs: [CommandSpec] = [
        CommandSpec(name: "guest-fsfreeze-status", allowedWhileFrozen: true, runsInline: true) { args, context throws(QGAError) in
            try args.finish()
            return .reply(.string(context.state.freeze.isFrozen ? "frozen" : "thawed"))
        },
        CommandSpec(name: "guest-fsfreeze-freeze") { args, context throws(QGAError) in
            try args.finish()
            return .reply(.int(try freeze(only: nil, context.state)))
        },
        CommandSpec(name: "guest-fsfreeze-freeze-list") { args, context throws(QGAError) in
            let mountpoints = try args.optionalStringArray("mountpoints")
            try args.finish()
            return .reply(.int(try freeze(only: mountpoints, context.state)))
        },
        CommandSpec(name: "guest-fsfreeze-thaw", allowedWhileFrozen: true) { args, context throws(QGAError) in
            try args.finish()
            let count = thaw(Mount.list())
            context.state.freeze.set(false)
            try? runHook("thaw", context.state.config)
            return .reply(.int(Int64(count)))
        },
    ]

    private static func freeze(only mountpoints: [String]?, _ state: AgentState) throws(QGAError) -> Int64 {
        var mounts = Mount.list().filter { !$0.isNetwork }
        if let mountpoints {
            for wanted in mountpoints where !mounts.contains(where: { $0.mountpoint == wanted }) {
                throw .generic("mount point '\(wanted)' is not a mounted local filesystem")
            }
            mounts = mounts.filter { mountpoints.contains($0.mountpoint) }
        }
        try runHook("freeze", state.config)
        state.freeze.set(true)
        var frozen: Int64 = 0
        // Innermost first, as qemu-ga does (reverse mount order).
        for mount in mounts.reversed() {
            switch ioctlOn(mount.mountpoint, FIFREEZE) {
            case 0: frozen += 1
            case EBUSY, EOPNOTSUPP: continue  // already frozen, or cannot freeze
            case let code:
                _ = thaw(mounts)
                state.freeze.set(false)
                try? runHook("thaw", state.config)
                throw .generic("failed to freeze \(mount.mountpoint): \(FileIO.errnoText(code))")
            }
        }
        return frozen
    }

    private static func thaw(_ mounts: [Mount]) -> Int {
        mounts.filter { !$0.isNetwork }.reduce(0) { $0 + (ioctlOn($1.mountpoint, FITHAW) == 0 ? 1 : 0) }
    }

    /// 0 on success, else errno.
    private static func ioctlOn(_ path: String, _ request: UInt) -> Int32 {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return errno }
        defer { close(fd) }
        var zero: Int32 = 0
        return Syscall.ioctl(fd, request, &zero) == 0 ? 0 : errno
    }

    /// Runs the hook with "freeze" or "thaw" when one is configured.
    private static func runHook(_ argument: String, _ config: AgentConfig) throws(QGAError) {
        guard let hook = config.freezeHook else { return }
        guard access(hook, X_OK) == 0 else {
            throw .generic("can't access fsfreeze hook '\(hook)': \(FileIO.errnoText())")
        }
        let status: ExitStatus
        do { status = try Subprocess.run([hook, argument]) } catch {
            throw .generic("failed to run fsfreeze hook '\(hook)': \(error)")
        }
        guard status.isSuccess else { throw .generic("fsfreeze hook has failed with status \(status)") }
    }
}
