import AgentProtocol

/// Why a request to the guest agent did not produce a reply.
public enum AgentError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The guest has not opened its end of org.qemu.guest_agent.0 (agent not running).
    case notConnected
    /// No reply within the bound; the channel is resynchronised before the next request.
    case timeout(milliseconds: UInt64)
    /// The agent answered with an error object.
    case agent(QGAError)
    /// The channel closed while waiting.
    case channelClosed

    public var description: String {
        switch self {
        case .notConnected:
            return "guest agent is not connected: the guest has not opened org.qemu.guest_agent.0"
        case .timeout(let ms):
            return "guest agent did not answer within \(Double(ms) / 1000) s"
        case .agent(let e):
            return "guest agent error: \(e)"
        case .channelClosed:
            return "guest agent channel closed"
        }
    }
}
