import AgentProtocol

/// guest-sync, guest-sync-delimited and guest-ping (protocols.md §1.3).
enum SyncCommands {
    static let specs: [CommandSpec] = [
        CommandSpec(name: "guest-sync-delimited", allowedWhileFrozen: true, runsInline: true) { args, _ throws(QGAError) in
            let id = try args.int("id")
            try args.finish()
            return .delimitedReply(.int(id))
        },
        CommandSpec(name: "guest-sync", allowedWhileFrozen: true, runsInline: true) { args, _ throws(QGAError) in
            let id = try args.int("id")
            try args.finish()
            return .reply(.int(id))
        },
        CommandSpec(name: "guest-ping", allowedWhileFrozen: true, runsInline: true) { args, _ throws(QGAError) in
            try args.finish()
            return .reply(.object([:]))
        },
    ]
}
