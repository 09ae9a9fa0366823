/// The usbredir protocol's numbers (spice/usbredir `usbredirproto.h`, 0.13; the
/// protocol document `docs/usb-redirection-protocol.md`). Every packet is a
/// header `{u32 type, u32 length, id}` and `length` bytes of type header and
/// data; `id` is a u32 until both peers' hellos announce `cap64BitIDs`, then a
/// u64. Both peers send their hello first, so a hello always has the 12-byte header.
public enum USBRedirPacketType: UInt32, Sendable {
    case hello = 0
    case deviceConnect = 1
    case deviceDisconnect = 2
    case reset = 3
    case interfaceInfo = 4
    case endpointInfo = 5
    case filterReject = 22
    case filterFilter = 23
    case deviceDisconnectAck = 24
    case controlPacket = 100
    case bulkPacket = 101
    case isoPacket = 102
    case interruptPacket = 103
    case bufferedBulkPacket = 104
}

public enum USBRedirCapability: Int, Sendable {
    case bulkStreams = 0
    case connectDeviceVersion = 1
    case filter = 2
    case deviceDisconnectAck = 3
    case endpointInfoMaxPacketSize = 4
    case ids64Bit = 5
    case bulkLength32Bit = 6
    case bulkReceiving = 7
}

/// `usb_redir_speed_*`.
public enum USBSpeed: UInt8, Sendable, CustomStringConvertible {
    case low = 0, full = 1, high = 2, superSpeed = 3, unknown = 255

    /// As QEMU and lsusb name them.
    public var description: String {
        switch self {
        case .low: return "low"
        case .full: return "full"
        case .high: return "high"
        case .superSpeed: return "super"
        case .unknown: return "unknown"
        }
    }
}

/// What a peer said in its hello: the version string and the capability bits.
public struct USBRedirHello: Equatable, Sendable {
    public var version: String
    public var capabilities: [UInt32]

    public func has(_ cap: USBRedirCapability) -> Bool {
        let word = cap.rawValue / 32
        return word < capabilities.count && capabilities[word] & (1 << UInt32(cap.rawValue % 32)) != 0
    }
}

/// `usb_redir_device_connect_header`: what a device is, as its peer announces it.
public struct USBRedirDevice: Equatable, Sendable {
    public var speed: USBSpeed
    public var deviceClass: UInt8
    public var subclass: UInt8
    public var deviceProtocol: UInt8
    public var vendorID: UInt16
    public var productID: UInt16
    /// Only with `connectDeviceVersion`.
    public var versionBCD: UInt16?

    public init(speed: USBSpeed, deviceClass: UInt8, subclass: UInt8, deviceProtocol: UInt8, vendorID: UInt16,
                productID: UInt16, versionBCD: UInt16?) {
        self.speed = speed
        self.deviceClass = deviceClass
        self.subclass = subclass
        self.deviceProtocol = deviceProtocol
        self.vendorID = vendorID
        self.productID = productID
        self.versionBCD = versionBCD
    }

    /// "1d6b:0104", as lsusb prints it.
    public var vidpid: String { Self.vidpid(vendorID, productID) }

    /// The same for any pair of ids (host devices, selectors).
    public static func vidpid(_ vendor: UInt16, _ product: UInt16) -> String {
        func hex4(_ v: UInt16) -> String {
            let s = String(v, radix: 16)
            return String(repeating: "0", count: 4 - s.count) + s
        }
        return hex4(vendor) + ":" + hex4(product)
    }
}

/// Little-endian loads from a byte array at an offset the caller has bounds-checked.
extension Array where Element == UInt8 {
    func usbLE16(_ at: Int) -> UInt16 { UInt16(self[at]) | UInt16(self[at + 1]) << 8 }
    func usbLE32(_ at: Int) -> UInt32 {
        UInt32(self[at]) | UInt32(self[at + 1]) << 8 | UInt32(self[at + 2]) << 16 | UInt32(self[at + 3]) << 24
    }
}
