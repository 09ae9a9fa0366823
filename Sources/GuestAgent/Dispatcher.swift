import AgentProtocol

/// Turns framer output into reply bytes: envelope check, table lookup, the
/// allow/block and freeze gates, argument validation, handler. Thread-safe:
/// the pipeline may run it on more than one worker after a resync.
final class Dispatcher: Sendable {
    let table: CommandTable
    let state: AgentState

    init(table: CommandTable = .standard, state: AgentState) {
        self.table = table
        self.state = state
    }

    /// Whether the reading thread may handle this input itself (see `CommandSpec.runsInline`).
    func runsInline(_ input: QGAInputFramer.Output) -> Bool {
        guard case .value(let value) = input else { return true }
        guard let name = value["execute"]?.stringValue else { return true }
        return table[name]?.runsInline ?? true  // unknown commands are answered at once
    }

    /// Reply bytes for one framer output, or nil when nothing is to be sent.
    func handle(_ input: QGAInputFramer.Output) -> [UInt8]? {
        switch input {
        case .error(let error), .resynchronise(let error):
            return QGAReply.failure(error, id: nil).encode()
        case .value(let value):
            switch QGARequest.decode(value) {
            case .failure(let bad):
                return QGAReply.failure(bad.error, id: bad.id).encode()
            case .success(let request):
                return execute(request)
            }
        }
    }

    private func execute(_ request: QGARequest) -> [UInt8]? {
        if state.config.verbose { Log.info("request: \(request.execute)") }
        guard let spec = table[request.execute] else {
            return QGAReply.failure(.commandNotFound(request.execute), id: request.id).encode()
        }
        if let refusal = state.isEnabled(spec) {
            return QGAReply.failure(refusal, id: request.id).encode()
        }
        var args = QGAArguments(request.arguments)
        do {
            switch try spec.handler(&args, CommandContext(table: table, state: state)) {
            case .noReply: return nil
            case .reply(let value): return QGAReply.success(value, id: request.id).encode()
            case .delimitedReply(let value): return QGAReply.success(value, id: request.id).encode(delimited: true)
            }
        } catch {
            return QGAReply.failure(error, id: request.id).encode()
        }
    }
}
