import AgentProtocol
import LinuxSystem

/// An error QEMU returned for a command, with its class and description, or a
/// failure of the monitor connection itself.
public struct QMPError: Error, Sendable, Equatable, CustomStringConvertible {
    public var errorClass: String
    public var desc: String

    public static func disconnected() -> QMPError {
        QMPError(errorClass: "Disconnected", desc: "the QEMU monitor connection closed")
    }

    public var description: String { "\(errorClass): \(desc)" }
}

/// An asynchronous QMP event (protocols.md §2.3).
public struct QMPEvent: Sendable, Equatable {
    public var name: String
    public var data: JSONObject
    /// Seconds since the epoch, from QEMU's timestamp (nil when QEMU sent -1).
    public var timestamp: Double?

    public init(name: String, data: JSONObject, timestamp: Double?) {
        self.name = name
        self.data = data
        self.timestamp = timestamp
    }
}

/// Client side of QMP on the event loop (protocols.md §2.1): waits for the
/// greeting, negotiates `qmp_capabilities`, then runs commands with ids and
/// streams events. Commands issued before negotiation completes are queued.
/// Unknown members anywhere are ignored.
final class QMPClient {
    typealias Completion = (Result<JSONValue, QMPError>) -> Void

    private enum Phase {
        case awaitingGreeting
        case negotiating
        case ready
        case closed
    }

    private let connection: LineConnection
    private var phase = Phase.awaitingGreeting
    private var nextID = 1
    private var inFlight: [String: Completion] = [:]
    private var queued: [(String, JSONObject, Completion)] = []

    var onReady: () -> Void = {}
    var onEvent: (QMPEvent) -> Void = { _ in }
    var onClose: () -> Void = {}
    var onProtocolError: (String) -> Void = { _ in }

    init(fd: Int32, loop: EventLoop) throws(SystemError) {
        connection = try LineConnection(fd: fd, loop: loop)
        connection.onOutput = { [unowned self] output in self.handle(output) }
        connection.onClose = { [unowned self] in self.closed() }
    }

    var isReady: Bool { phase == .ready }

    func execute(_ command: String, arguments: JSONObject = [:], completion: @escaping Completion = { _ in }) {
        switch phase {
        case .ready: send(command, arguments, completion)
        case .closed: completion(.failure(.disconnected()))
        case .awaitingGreeting, .negotiating: queued.append((command, arguments, completion))
        }
    }

    func close() { connection.close() }

    /// `getfd`: hands QEMU a descriptor it then knows as `name` (for `add_client`).
    /// Only once QMP is ready; `descriptor` stays ours to close either way.
    func passDescriptor(_ descriptor: Int32, name: String, completion: @escaping Completion) {
        guard phase == .ready else {
            completion(.failure(QMPError(errorClass: "GenericError", desc: "QMP is not ready")))
            return
        }
        send("getfd", ["fdname": .string(name)], completion, passing: descriptor)
    }

    /// With `descriptor`, the line carries it (SCM_RIGHTS); if that cannot be sent, `completion` fails now.
    private func send(_ command: String, _ arguments: JSONObject, _ completion: @escaping Completion,
                      passing descriptor: Int32? = nil) {
        let id = "hostvmm-\(nextID)"
        nextID += 1
        var msg: JSONObject = ["execute": .string(command), "id": .string(id)]
        if !arguments.isEmpty { msg["arguments"] = .object(arguments) }
        // Registered before sending: a failed write closes the connection at once, and
        // closing fails every completion in flight, this one included.
        inFlight[id] = completion
        if let descriptor {
            guard connection.sendLine(.object(msg), passing: descriptor) else {
                inFlight.removeValue(forKey: id)?(
                    .failure(QMPError(errorClass: "GenericError", desc: "could not pass the descriptor to QEMU")))
                return
            }
        } else {
            connection.sendLine(.object(msg))
        }
    }

    private func handle(_ output: LineFramer.Output) {
        guard case .line(let bytes) = output else { return }
        guard let value = try? JSONParser.parse(bytes), case .object(let msg) = value else {
            onProtocolError("unparseable QMP line: \(String(decoding: bytes.prefix(200), as: UTF8.self))")
            return
        }
        switch phase {
        case .awaitingGreeting:
            guard msg["QMP"] != nil else {
                onProtocolError("expected the QMP greeting")
                return
            }
            phase = .negotiating
            connection.sendLine(["execute": "qmp_capabilities"])
        case .negotiating:
            if msg["event"] != nil { return }
            guard msg["return"] != nil else {
                onProtocolError("qmp_capabilities failed: \(JSONWriter.string(value))")
                return
            }
            phase = .ready
            let pending = queued
            queued = []
            for (command, args, completion) in pending { send(command, args, completion) }
            onReady()
        case .ready:
            if case .string(let name)? = msg["event"] {
                onEvent(Self.event(name: name, msg))
                return
            }
            guard case .string(let id)? = msg["id"], let completion = inFlight.removeValue(forKey: id) else {
                return  // a reply to nobody: ignore, as qemu.qmp does
            }
            if let ret = msg["return"] {
                completion(.success(ret))
            } else {
                let err = msg["error"]
                completion(.failure(QMPError(errorClass: err?["class"]?.stringValue ?? "GenericError",
                                             desc: err?["desc"]?.stringValue ?? "unknown error")))
            }
        case .closed:
            break
        }
    }

    private static func event(name: String, _ msg: JSONObject) -> QMPEvent {
        var time: Double?
        if let ts = msg["timestamp"], let s = ts["seconds"]?.int64Value, s >= 0 {
            time = Double(s) + Double(ts["microseconds"]?.int64Value ?? 0) / 1e6
        }
        return QMPEvent(name: name, data: msg["data"]?.objectValue ?? [:], timestamp: time)
    }

    private func closed() {
        phase = .closed
        let waiting = Array(inFlight.values) + queued.map(\.2)
        inFlight = [:]
        queued = []
        for completion in waiting { completion(.failure(.disconnected())) }
        onClose()
    }
}
