import AgentProtocol
import Foundation
import LinuxSystem

/// The control API (architecture.md §4): line-delimited JSON in QMP's shape, so
/// QMP tooling (qemu.qmp) speaks it. A greeting, `qmp_capabilities`, then
/// `{"execute":...,"arguments":...,"id":...}` answered by `return` or `error`,
/// and asynchronous `event` objects. Commands are in `ControlCommands.table`.
final class ControlServer {
    final class Session {
        let connection: LineConnection
        var negotiated = false
        init(connection: LineConnection) { self.connection = connection }
    }

    private let loop: EventLoop
    weak var vm: VirtualMachine?
    private var sessions: [ObjectIdentifier: Session] = [:]

    /// Control lines are small; a megabyte is plenty and bounds a hostile client.
    static let maxLineBytes = 1 << 20

    init(loop: EventLoop) { self.loop = loop }

    static func greeting() -> JSONValue {
        .object(["QMP": .object([
            "version": .object([
                "qemu": .object(["major": .int(0), "minor": .int(1), "micro": .int(0)]),
                "package": .string("hostvmm"),
            ]),
            "capabilities": .array([]),
        ])])
    }

    func accept(fd: Int32) {
        guard let connection = try? LineConnection(fd: fd, loop: loop, framer: LineFramer(maxLineBytes: Self.maxLineBytes))
        else {
            close(fd)
            return
        }
        let session = Session(connection: connection)
        let key = ObjectIdentifier(session)
        sessions[key] = session
        connection.onClose = { [weak self] in self?.sessions.removeValue(forKey: key) }
        connection.onOutput = { [weak self, unowned session] output in self?.handle(output, from: session) }
        connection.sendLine(Self.greeting())
    }

    func broadcast(_ event: VMEvent) {
        for session in sessions.values where session.negotiated { session.connection.sendLine(event.json) }
    }

    func closeAll() {
        for session in sessions.values { session.connection.close() }
        sessions = [:]
    }

    private func handle(_ output: LineFramer.Output, from session: Session) {
        let line: [UInt8]
        switch output {
        case .delimiter: return
        case .oversized(let n):
            reply(session, id: nil, .failure(.generic("request of \(n) bytes exceeds \(Self.maxLineBytes) bytes")))
            return
        case .line(let l): line = l
        }
        if line.allSatisfy({ $0 == 0x20 || $0 == 0x09 }) { return }
        let value: JSONValue
        do {
            value = try JSONParser.parse(line)
        } catch {
            reply(session, id: nil, .failure(.generic(error.description)))
            return
        }
        let request: QGARequest
        switch QGARequest.decode(value) {
        case .failure(let bad):
            reply(session, id: bad.id, .failure(.generic(bad.error.desc)))
            return
        case .success(let r): request = r
        }
        if !session.negotiated {
            guard request.execute == "qmp_capabilities" else {
                reply(session, id: request.id, .failure(.commandNotFound(
                    "\(request.execute) (expecting capabilities negotiation with 'qmp_capabilities')")))
                return
            }
            session.negotiated = true
            reply(session, id: request.id, .success(.object([:])))
            return
        }
        guard let vm else {
            reply(session, id: request.id, .failure(.generic("no VM")))
            return
        }
        guard let command = ControlCommands.table[request.execute] else {
            reply(session, id: request.id, .failure(.commandNotFound(request.execute)))
            return
        }
        command(vm, request.arguments) { [weak self, weak session] result in
            guard let self, let session else { return }
            self.reply(session, id: request.id, result)
        }
    }

    private func reply(_ session: Session, id: JSONValue?, _ result: Result<JSONValue, ControlError>) {
        var obj = JSONObject()
        switch result {
        case .success(let v): obj["return"] = v
        case .failure(let e): obj["error"] = e.json
        }
        if let id { obj["id"] = id }
        session.connection.sendLine(.object(obj))
    }
}
