import AgentProtocol

/// An error answered on the control socket, in QMP's shape.
public enum ControlError: Error, Sendable, CustomStringConvertible {
    case generic(String)
    case commandNotFound(String)
    case agent(AgentError)
    case qmp(QMPError)

    public var errorClass: String {
        switch self {
        case .generic: return "GenericError"
        case .commandNotFound: return "CommandNotFound"
        case .agent(.timeout): return "AgentTimeout"
        case .agent(.notConnected), .agent(.channelClosed): return "AgentNotConnected"
        case .agent(.agent(let e)): return e.errorClass.rawValue
        case .qmp(let e): return e.errorClass
        }
    }

    public var description: String {
        switch self {
        case .generic(let s): return s
        case .commandNotFound(let name): return "The command \(name) has not been found"
        case .agent(let e): return e.description
        case .qmp(let e): return "QEMU: \(e.desc)"
        }
    }

    var json: JSONValue {
        .object(["class": .string(errorClass), "desc": .string(description)])
    }
}
