import AgentProtocol
import LinuxSystem

/// Our extension: lock the guest's screen (protocol.md §1.9).
enum LockCommands {
    static let specs: [CommandSpec] = [
        CommandSpec(name: QGAExtensions.lockScreen) { args, context throws(QGAError) in
            try args.finish()
            return .reply(try lock(busPath: context.state.config.systemBusPath))
        }
    ]

    /// {"method": "logind", "sessions": [...]}: the sessions it asked logind to lock.
    static func lock(busPath: String) throws(QGAError) -> JSONValue {
        do {
            let sessions = try SessionLocker.lockUserSessions(busPath: busPath)
            return .object(["method": .string("logind"), "sessions": .array(sessions.map(\.json))])
        } catch {
            throw .generic(error.description)
        }
    }
}
