import AgentProtocol
import CLinuxSupport
import Foundation
import LinuxSystem

/// The control API (architecture.md §4): JSON in QMP's shape, so QMP tooling
/// (qemu.qmp, qmp-shell) speaks it. A greeting, `qmp_capabilities`, then
/// `{"execute":...,"arguments":...,"id":...}` answered by `return` or `error`,
/// and asynchronous `event` objects. Commands are in `ControlCommands.table`.
/// Requests are read as QEMU's monitor reads them (QGAInputFramer: its
/// json-streamer's rules), newline or not: qemu.qmp sends none.
final class ControlServer {
    final class Session {
        let stream: StreamConnection
        var framer = QGAInputFramer(maxRequestBytes: ControlServer.maxLineBytes)
        var negotiated = false
        /// The most this session made hostvmm hold at once (request being read, replies queued).
        var largestHeld = 0
        init(stream: StreamConnection) { self.stream = stream }

        /// Replies and events go out one per line, as QEMU writes them. A client that lets
        /// them pile up past the bound is cut off.
        func send(_ value: JSONValue) {
            let bytes = ControlServer.line(value)
            guard stream.pendingBytes + bytes.count <= ControlServer.maxPendingBytesPerSession else {
                stream.close()
                return
            }
            _ = stream.send(bytes)
        }
    }

    private let loop: EventLoop
    weak var vm: VirtualMachine?
    private var sessions: [ObjectIdentifier: Session] = [:]

    /// Control requests are small; a megabyte is plenty and bounds a hostile client.
    static let maxLineBytes = 1 << 20
    /// Bounds on what local clients can make hostvmm hold (protocol.md §2): sessions at
    /// once, and replies and events queued for a client that does not read them. A client
    /// over the second bound is disconnected rather than let grow hostvmm.
    static let maxSessions = 64
    static let maxPendingBytesPerSession = 4 << 20
    /// Sessions that held more than this give their memory back to the system when they end.
    static let trimThreshold = 256 << 10

    init(loop: EventLoop) { self.loop = loop }

    /// One JSON value and its LF, as QEMU writes replies and events.
    static func line(_ value: JSONValue) -> [UInt8] {
        JSONWriter.encode(value) + [0x0A]
    }

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
        guard let stream = try? StreamConnection(fd: fd, loop: loop) else {
            close(fd)
            return
        }
        guard sessions.count < Self.maxSessions else {
            let refusal = ControlError.generic("too many control connections (\(Self.maxSessions))")
            _ = stream.send(Self.line(.object(["error": refusal.json])))
            stream.close()
            return
        }
        let session = Session(stream: stream)
        let key = ObjectIdentifier(session)
        sessions[key] = session
        stream.onClose = { [weak self] in
            guard let gone = self?.sessions.removeValue(forKey: key) else { return }
            // A session that held a large request or a long reply queue leaves freed memory
            // inside malloc's heap: give it back, or 64 clients sending 1 MiB requests at
            // once keep ~60 MiB resident after they leave (measured by scripts/faults.py).
            if gone.largestHeld > Self.trimThreshold { clinux_release_free_memory() }
        }
        // Weak, and held strongly while delivering: a command may close every session.
        stream.onBytes = { [weak self, weak session] bytes in
            guard let self, let session else { return }
            for output in session.framer.feed(bytes) {
                self.handle(output, from: session)
                if session.stream.isClosed { return }
            }
            session.largestHeld = max(session.largestHeld, session.framer.pendingByteCount, session.stream.pendingBytes)
        }
        session.send(Self.greeting())
    }

    func broadcast(_ event: VMEvent) {
        for session in sessions.values where session.negotiated { session.send(event.json) }
    }

    func closeAll() {
        for session in sessions.values { session.stream.close() }
        sessions = [:]
    }

    private func handle(_ output: QGAInputFramer.Output, from session: Session) {
        let value: JSONValue
        switch output {
        case .error(let e), .resynchronise(let e):
            // Malformed or oversized input, reported in QEMU's words; the session goes on.
            reply(session, id: nil, .failure(.generic(e.desc)))
            return
        case .value(let v): value = v
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
        session.send(.object(obj))
    }
}
