import AgentProtocol

/// What a guest reported through pvpanic, as QEMU relays it on QMP
/// (protocols.md §5 and §2.3). Decoding is pure: event name and data in.
public enum PanicEvent: Sendable, Equatable {
    /// PVPANIC_PANICKED: the guest panicked and wants the host to act.
    /// `action` is what QEMU did (we run QEMU with panic=pause, so "pause").
    case panicked(action: String)
    /// PVPANIC_CRASH_LOADED: panicked, but a kdump kernel takes over; record only.
    case crashLoaded
    /// PVPANIC_SHUTDOWN: a regular poweroff announced by the guest. Not a crash.
    case shutdownAnnounced

    public static func decode(qmpEvent name: String, data: JSONObject) -> PanicEvent? {
        switch name {
        case "GUEST_PANICKED": return .panicked(action: data["action"]?.stringValue ?? "unknown")
        case "GUEST_CRASHLOADED": return .crashLoaded
        case "GUEST_PVSHUTDOWN": return .shutdownAnnounced
        default: return nil
        }
    }

    public var kind: String {
        switch self {
        case .panicked: return "panicked"
        case .crashLoaded: return "crash-loaded"
        case .shutdownAnnounced: return "shutdown"
        }
    }

    /// Whether this is a crash worth a bundle (a pvpanic shutdown is not).
    public var isCrash: Bool { self != .shutdownAnnounced }
}
