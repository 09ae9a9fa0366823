import AgentProtocol
import Foundation

/// An event hostvmm reports on its control socket and in the foreground:
/// QEMU's own events with their names lower-cased (`SHUTDOWN` -> `shutdown`),
/// plus hostvmm's (`agent-ready`, `agent-lost`, `qemu-exited`, ...).
public struct VMEvent: Sendable {
    public var name: String
    public var data: JSONObject
    public var time: Double

    public init(name: String, data: JSONObject = [:], time: Double = Date().timeIntervalSince1970) {
        self.name = name
        self.data = data
        self.time = time
    }

    /// QMP's event shape, so QMP tooling reads it.
    public var json: JSONValue {
        let seconds = time.rounded(.down)
        return .object([
            "event": .string(name),
            "data": .object(data),
            "timestamp": .object(["seconds": .int(Int64(seconds)), "microseconds": .int(Int64((time - seconds) * 1e6))]),
        ])
    }

    static func fromQMP(_ e: QMPEvent) -> VMEvent {
        VMEvent(name: e.name.lowercased().replacingOccurrences(of: "_", with: "-"), data: e.data,
                time: e.timestamp ?? Date().timeIntervalSince1970)
    }
}
