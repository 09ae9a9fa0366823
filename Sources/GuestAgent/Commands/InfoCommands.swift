import AgentProtocol

/// guest-info: the agent's version and every command it knows, from the table,
/// with `enabled` as the allow/block lists and the freeze state have it now.
enum InfoCommands {
    static let specs: [CommandSpec] = [
        CommandSpec(name: "guest-info", allowedWhileFrozen: true, runsInline: true) { args, context throws(QGAError) in
            try args.finish()
            let commands: [JSONValue] = context.table.specs.map { spec in
                .object([
                    "enabled": .bool(context.state.isEnabled(spec) == nil),
                    "name": .string(spec.name),
                    "success-response": .bool(spec.successResponse),
                ])
            }
            return .reply(.object(["version": .string(AgentVersion.string), "supported_commands": .array(commands)]))
        }
    ]
}
