import AgentProtocol

/// What a handler produces: a value to return, or nothing at all (the commands
/// QGA marks `success-response: false`, whose success the host observes out of band).
enum CommandOutcome {
    case reply(JSONValue)
    case noReply
}

/// One QGA command: its wire name, whether it answers on success, and its handler.
/// The dispatcher and `guest-info` both read this table, so a command is listed
/// only where it is implemented (style.md, "Tables, not switch sprawl").
struct CommandSpec: Sendable {
    var name: String
    var successResponse: Bool = true
    var handler: @Sendable (inout QGAArguments, CommandContext) throws(QGAError) -> CommandOutcome
}

/// State a handler may need from the agent.
final class CommandContext {
    let table: CommandTable
    /// Set by guest-sync-delimited: the next reply is prefixed with 0xFF.
    var delimitNextReply = false

    init(table: CommandTable) { self.table = table }
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

    /// Every command this agent implements, in registration order.
    static let standard = CommandTable(
        SyncCommands.specs + InfoCommands.specs + ShutdownCommand.specs
    )
}
