/// Watches a usbredir connection's two byte streams as they pass through
/// unchanged, and says what happened to the device: which one connected (speed,
/// VID:PID, as its peer announced it), when it left, and whether a stream broke
/// the framing. Pure: the caller feeds bytes and acts on the events.
///
/// Data packets are skipped by length without being buffered. A stream that
/// breaks the framing (an unknown type, an impossible length) is not followed
/// further; the bytes still pass, and QEMU's own parser decides what to do.
public struct USBRedirObserver: Sendable {
    public enum Direction: Sendable, CustomStringConvertible {
        /// From the side that has the device (a SPICE client's usbredirhost, our host glue).
        case fromDevice
        /// From QEMU's usb-redir device.
        case fromQEMU

        public var description: String { self == .fromDevice ? "device side" : "QEMU" }
    }

    public enum Event: Equatable, Sendable {
        case hello(Direction, USBRedirHello)
        case deviceConnected(USBRedirDevice)
        case deviceDisconnected
        /// QEMU refused the device (its filter, a speed mismatch, missing capabilities).
        case filterRejected
        case framingLost(Direction, String)
    }

    /// Type headers and hellos are small; anything claiming more, for a packet we read, is broken.
    static let maxReadPacket = 4096
    /// usbredirparser refuses larger packets too (its USB_REDIR_... data limit is 64 MiB for bulk).
    static let maxPacketLength: UInt32 = 128 << 20

    private var device = Stream()
    private var qemu = Stream()
    private var hellos: (device: USBRedirHello?, qemu: USBRedirHello?) = (nil, nil)

    public init() {}

    /// Both peers announced 64-bit ids: headers are 16 bytes from now on.
    var headerLength: Int {
        guard let d = hellos.device, let q = hellos.qemu else { return 12 }
        return d.has(.ids64Bit) && q.has(.ids64Bit) ? 16 : 12
    }

    public var deviceHello: USBRedirHello? { hellos.device }
    public var qemuHello: USBRedirHello? { hellos.qemu }

    public mutating func feed(_ bytes: [UInt8], from direction: Direction) -> [Event] {
        var stream = direction == .fromDevice ? device : qemu
        var events: [Event] = []
        if stream.lost { return [] }
        // Inside a data packet's payload (the bulk of the traffic): nothing to copy.
        if stream.pending.isEmpty && stream.skip >= bytes.count {
            stream.skip -= bytes.count
            if direction == .fromDevice { device = stream } else { qemu = stream }
            return []
        }
        // Parse the new bytes where they are unless a packet's start is still pending;
        // only an unfinished tail is kept for the next call.
        var buffer = stream.pending
        if buffer.isEmpty { buffer = bytes } else { buffer += bytes }
        stream.pending = []
        var at = 0
        while !stream.lost {
            if stream.skip > 0 {
                let n = min(stream.skip, buffer.count - at)
                stream.skip -= n
                at += n
                if stream.skip > 0 { break }
            }
            let header = stream.sawHello ? headerLength : 12
            guard buffer.count - at >= header else { break }
            let type = buffer.usbLE32(at)
            let length = buffer.usbLE32(at + 4)
            guard Self.isDefined(type), length <= Self.maxPacketLength else {
                stream.lost = true
                events.append(.framingLost(direction, "packet type \(type), length \(length)"))
                break
            }
            if !stream.sawHello && type != USBRedirPacketType.hello.rawValue {
                stream.lost = true
                events.append(.framingLost(direction, "packet type \(type) before the hello"))
                break
            }
            guard let known = USBRedirPacketType(rawValue: type),
                [.hello, .deviceConnect, .deviceDisconnect, .filterReject].contains(known)
            else {
                at += header
                stream.skip = Int(length)
                continue
            }
            guard length <= Self.maxReadPacket else {
                stream.lost = true
                events.append(.framingLost(direction, "a \(known) packet of \(length) bytes"))
                break
            }
            guard buffer.count - at >= header + Int(length) else { break }
            let body = Array(buffer[(at + header)..<(at + header + Int(length))])
            at += header + Int(length)
            switch known {
            case .hello:
                guard body.count >= 64, !stream.sawHello else {
                    stream.lost = true
                    events.append(.framingLost(direction, stream.sawHello ? "a second hello" : "a short hello"))
                    break
                }
                let text = body[0..<64].prefix { $0 != 0 }
                let caps = stride(from: 64, to: body.count - 3, by: 4).map { body.usbLE32($0) }
                let hello = USBRedirHello(version: String(decoding: text, as: UTF8.self), capabilities: caps)
                stream.sawHello = true
                if direction == .fromDevice { hellos.device = hello } else { hellos.qemu = hello }
                events.append(.hello(direction, hello))
            case .deviceConnect where direction == .fromDevice:
                guard body.count >= 8 else {
                    stream.lost = true
                    events.append(.framingLost(direction, "a short device_connect"))
                    break
                }
                let withVersion = body.count >= 10 && (hellos.device?.has(.connectDeviceVersion) ?? false)
                    && (hellos.qemu?.has(.connectDeviceVersion) ?? false)
                events.append(.deviceConnected(USBRedirDevice(
                    speed: USBSpeed(rawValue: body[0]) ?? .unknown, deviceClass: body[1], subclass: body[2],
                    deviceProtocol: body[3], vendorID: body.usbLE16(4), productID: body.usbLE16(6),
                    versionBCD: withVersion ? body.usbLE16(8) : nil)))
            case .deviceDisconnect where direction == .fromDevice:
                events.append(.deviceDisconnected)
            case .filterReject where direction == .fromQEMU:
                events.append(.filterRejected)
            default:
                break
            }
        }
        if !stream.lost && at < buffer.count { stream.pending = Array(buffer[at...]) }
        if direction == .fromDevice { device = stream } else { qemu = stream }
        return events
    }

    /// usbredirproto.h's packet types: control packets 0-27, data packets 100-104.
    static func isDefined(_ type: UInt32) -> Bool { type <= 27 || (100...104).contains(type) }

    private struct Stream {
        var pending: [UInt8] = []
        var skip = 0
        var sawHello = false
        var lost = false
    }
}
