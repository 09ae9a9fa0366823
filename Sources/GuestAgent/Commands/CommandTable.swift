import AgentProtocol

/// What a handler produces: a value, a value whose line is preceded by 0xFF
/// (guest-sync-delimited), or nothing at all (the commands QGA marks
/// `success-response: false`, whose success the host observes out of band).
enum CommandOutcome {
    case reply(JSONValue)
    case delimitedReply(JSONValue)
    case noReply
}

/// One QGA command: its wire name, whether it answers on success, whether it
/// may run while filesystems are frozen, and its handler. The dispatcher, the
/// allow/block lists and `guest-info` all read this table, so a command is
/// listed only where it is implemented (style.md, "Tables, not switch sprawl").
struct CommandSpec: Sendable {
    var name: String
    var successResponse: Bool = true
    var allowedWhileFrozen: Bool = false
    /// Cheap and never blocks (no child processes, no filesystem I/O that can
    /// stall): the reading thread may answer it directly when nothing is queued,
    /// saving the hand-off to the worker thread.
    var runsInline: Bool = false
    var handler: @Sendable (inout QGAArguments, CommandContext) throws(QGAError) -> CommandOutcome
}

/// What a handler may use: the table (for guest-info) and the agent's state.
struct CommandContext {
    let table: CommandTable
    let state: AgentState
}

struct CommandTable: Sendable {
    private(set) var specs: [CommandSpec] = []
    private var index: [String: Int] = [:]

    init(_ specs: [CommandSpec]) {
        for spec in specs {
            precondition(index[spec.name] == nil, "command \(spec.name) registered twice")
            index[spec.name] = self.specs.count
            self.specs.append(spec)
        }
    }

    subscript(name: String) -> CommandSpec? {
        index[name].map { specs[$0] }
    }

    /// Every command this agent implements, grouped as in protocol.md.
    static let standard = CommandTable(
        SyncCommands.specs + InfoCommands.specs + PowerCommands.specs + TimeCommands.specs
            + HostInfoCommands.specs + CPUCommands.specs + MemoryCommands.specs + NetworkCommands.specs
            + FilesystemCommands.specs + FreezeCommands.specs + FileCommands.specs + ExecCommands.specs
            + UserCommands.specs + LockCommands.specs
    )
}
