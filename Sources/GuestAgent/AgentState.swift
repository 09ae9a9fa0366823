import AgentProtocol
import LinuxSystem

/// Everything commands share across requests: configuration, open file
/// handles, guest-exec processes and the freeze state. Each part locks itself,
/// so a command stuck in one part never blocks the others.
final class AgentState: Sendable {
    let config: AgentConfig
    let files: FileHandleTable
    let processes: ExecTable
    let freeze: FreezeState

    init(config: AgentConfig) {
        self.config = config
        files = FileHandleTable(stateDir: config.stateDir)
        processes = ExecTable()
        freeze = FreezeState(stateDir: config.stateDir)
    }

    /// Why `spec` may not run now (qemu-ga's texts), or nil if it may.
    func isEnabled(_ spec: CommandSpec) -> QGAError? {
        if !config.permits(spec.name) { return .commandDisabled(spec.name, reason: "the command is not allowed") }
        if freeze.isFrozen && !spec.allowedWhileFrozen {
            return .commandDisabled(spec.name, reason: "the agent is in frozen state")
        }
        return nil
    }
}
