/// One SPICE agent message, decoded. Clipboard messages carry the selection
/// only with CLIPBOARD_SELECTION, and a grab carries a serial only with
/// CLIPBOARD_GRAB_SERIAL, so decoding and encoding take the capabilities in
/// force (protocols.md §3.6): in practice those both sides announced.
public enum VDAgentMessage: Sendable, Equatable {
    case announceCapabilities(request: Bool, VDAgentCapabilities)
    case clipboardGrab(VDAgentSelection, serial: UInt32?, types: [VDAgentClipboardType])
    case clipboardRequest(VDAgentSelection, VDAgentClipboardType)
    case clipboard(VDAgentSelection, VDAgentClipboardType, [UInt8])
    case clipboardRelease(VDAgentSelection)
    case clientDisconnected
    case maxClipboard(Int32)
    case reply(type: UInt32, error: UInt32)
    case monitorsConfig(VDAgentMonitorsConfig)
    case mouseState(x: UInt32, y: UInt32, buttons: UInt32, display: UInt8)
    /// Types we carry but do not interpret (display config, file transfer,
    /// audio volume, graphics device info): passed on as they came.
    case other(VDAgentMessageType, [UInt8])

    public var type: VDAgentMessageType {
        switch self {
        case .announceCapabilities: return .announceCapabilities
        case .clipboardGrab: return .clipboardGrab
        case .clipboardRequest: return .clipboardRequest
        case .clipboard: return .clipboard
        case .clipboardRelease: return .clipboardRelease
        case .clientDisconnected: return .clientDisconnected
        case .maxClipboard: return .maxClipboard
        case .reply: return .reply
        case .monitorsConfig: return .monitorsConfig
        case .mouseState: return .mouseState
        case .other(let t, _): return t
        }
    }
}

/// `VDAgentMonitorsConfig`: monitors, and their physical sizes when the client
/// sent them (spice-gtk always does; spice-vdagentd 0.22 refuses that form:
/// protocols.md §0 finding 6 — `withoutPhysicalSize` produces what it accepts).
public struct VDAgentMonitorsConfig: Sendable, Equatable {
    public struct Monitor: Sendable, Equatable {
        public var width: UInt32
        public var height: UInt32
        public var depth: UInt32
        public var x: Int32
        public var y: Int32
        public init(width: UInt32, height: UInt32, depth: UInt32 = 32, x: Int32 = 0, y: Int32 = 0) {
            self.width = width
            self.height = height
            self.depth = depth
            self.x = x
            self.y = y
        }
    }

    public static let usePosition: UInt32 = 0x1
    public static let physicalSize: UInt32 = 0x2

    public var flags: UInt32
    public var monitors: [Monitor]
    /// (width_mm, height_mm) per monitor, present iff flags has `physicalSize`.
    public var physicalSizes: [(widthMM: UInt16, heightMM: UInt16)]

    public init(flags: UInt32, monitors: [Monitor], physicalSizes: [(widthMM: UInt16, heightMM: UInt16)] = []) {
        self.flags = flags
        self.monitors = monitors
        self.physicalSizes = physicalSizes
    }

    public var withoutPhysicalSize: VDAgentMonitorsConfig {
        VDAgentMonitorsConfig(flags: flags & ~Self.physicalSize, monitors: monitors)
    }

    public static func == (a: Self, b: Self) -> Bool {
        a.flags == b.flags && a.monitors == b.monitors && a.physicalSizes.count == b.physicalSizes.count
            && zip(a.physicalSizes, b.physicalSizes).allSatisfy { $0.widthMM == $1.widthMM && $0.heightMM == $1.heightMM }
    }
}
