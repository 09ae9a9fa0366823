import AgentProtocol

/// Turns framer output into reply bytes: envelope check, table lookup, argument
/// validation, handler. Pure with respect to I/O, so tests can drive it.
final class Dispatcher {
    let table: CommandTable
    let context: CommandContext
    let verbose: Bool

    init(table: CommandTable = .standard, verbose: Bool = false) {
        self.table = table
        self.context = CommandContext(table: table)
        self.verbose = verbose
    }

    /// Reply bytes for one framer output, or nil when nothing is to be sent.
    func handle(_ input: QGAInputFramer.Output) -> [UInt8]? {
        switch input {
        case .error(let error):
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
        if verbose { Log.info("request: \(request.execute)") }
        guard let spec = table[request.execute] else {
            return QGAReply.failure(.commandNotFound(request.execute), id: request.id).encode()
        }
        var args = QGAArguments(request.arguments)
        let reply: QGAReply
        do {
            switch try spec.handler(&args, context) {
            case .noReply: return nil
            case .reply(let value): reply = .success(value, id: request.id)
            }
        } catch {
            reply = .failure(error, id: request.id)
        }
        let delimited = context.delimitNextReply
        context.delimitNextReply = false
        return reply.encode(delimited: delimited)
    }
}
