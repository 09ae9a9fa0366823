/// SPICE agent protocol numbers (spice-protocol `spice/vd_agent.h`;
/// protocols.md §3). All integers on the wire are little-endian.
public enum VDAgent {
    /// `VD_AGENT_PROTOCOL`: every message header carries it.
    public static let protocolVersion: UInt32 = 1
    /// `VD_AGENT_MAX_DATA_SIZE`: a chunk towards the guest carries at most this
    /// many payload bytes; spice-vdagentd treats a larger one as lost sync.
    public static let maxChunkToGuest = 2048
    /// spice-gtk's default clipboard limit (100 MiB): larger messages are dropped.
    public static let defaultMaxMessageSize = 100 << 20
    public static let chunkHeaderSize = 8
    public static let messageHeaderSize = 20
}

/// `VDIChunkHeader.port`.
public enum VDAgentPort: UInt32, Sendable {
    /// To and from the SPICE client.
    case client = 1
    /// To and from spice-server itself (MOUSE_STATE, CLIENT_DISCONNECTED, ...).
    case server = 2
}

/// `VDAgentMessage.type` (protocols.md §3.4).
public enum VDAgentMessageType: UInt32, Sendable, CaseIterable {
    case mouseState = 1
    case monitorsConfig = 2
    case reply = 3
    case clipboard = 4
    case displayConfig = 5
    case announceCapabilities = 6
    case clipboardGrab = 7
    case clipboardRequest = 8
    case clipboardRelease = 9
    case fileXferStart = 10
    case fileXferStatus = 11
    case fileXferData = 12
    case clientDisconnected = 13
    case maxClipboard = 14
    case audioVolumeSync = 15
    case graphicsDeviceInfo = 16
}

/// Capability bits (protocols.md §3.5); a set is a bitmap of u32 words.
public struct VDAgentCapabilities: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let mouseState = Self(rawValue: 1 << 0)
    public static let monitorsConfig = Self(rawValue: 1 << 1)
    public static let reply = Self(rawValue: 1 << 2)
    public static let clipboard = Self(rawValue: 1 << 3)
    public static let displayConfig = Self(rawValue: 1 << 4)
    public static let clipboardByDemand = Self(rawValue: 1 << 5)
    public static let clipboardSelection = Self(rawValue: 1 << 6)
    public static let sparseMonitorsConfig = Self(rawValue: 1 << 7)
    public static let guestLineEndLF = Self(rawValue: 1 << 8)
    public static let guestLineEndCRLF = Self(rawValue: 1 << 9)
    public static let maxClipboard = Self(rawValue: 1 << 10)
    public static let audioVolumeSync = Self(rawValue: 1 << 11)
    public static let monitorsConfigPosition = Self(rawValue: 1 << 12)
    public static let fileXferDisabled = Self(rawValue: 1 << 13)
    public static let fileXferDetailedErrors = Self(rawValue: 1 << 14)
    public static let graphicsDeviceInfo = Self(rawValue: 1 << 15)
    public static let clipboardNoReleaseOnRegrab = Self(rawValue: 1 << 16)
    public static let clipboardGrabSerial = Self(rawValue: 1 << 17)
}

/// Clipboard selections spice-vdagent handles (the 1-byte selection prefix).
public enum VDAgentSelection: UInt8, Sendable, CaseIterable {
    case clipboard = 0
    case primary = 1
    case secondary = 2
}

/// `VD_AGENT_CLIPBOARD_*` data types.
public enum VDAgentClipboardType: UInt32, Sendable, CaseIterable {
    case none = 0
    case utf8Text = 1
    case imagePNG = 2
    case imageBMP = 3
    case imageTIFF = 4
    case imageJPG = 5
    case fileList = 6
}

/// Why a chunk or message was refused. The stream stays usable after each.
public enum VDAgentError: Error, Sendable, Equatable, CustomStringConvertible {
    case badPort(UInt32)
    case badProtocol(UInt32)
    case unknownType(UInt32)
    case oversize(declared: Int, limit: Int)
    case truncated(VDAgentMessageType, needed: Int, got: Int)
    case badValue(field: String, value: UInt32)

    public var description: String {
        switch self {
        case .badPort(let p): return "chunk for unknown port \(p)"
        case .badProtocol(let p): return "message with protocol \(p), expected \(VDAgent.protocolVersion)"
        case .unknownType(let t): return "unknown message type \(t)"
        case .oversize(let d, let l): return "message of \(d) bytes exceeds the \(l)-byte limit"
        case .truncated(let t, let n, let g): return "\(t) needs \(n) bytes, got \(g)"
        case .badValue(let f, let v): return "invalid \(f) \(v)"
        }
    }
}
