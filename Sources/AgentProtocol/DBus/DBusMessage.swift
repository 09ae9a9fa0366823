/// One D-Bus message: the fixed header, the header fields, the body.
/// Encoding and decoding only; the agent's SystemBus does the I/O.
public struct DBusMessage: Sendable, Equatable {
    public enum Kind: UInt8, Sendable {
        case methodCall = 1, methodReturn = 2, error = 3, signal = 4
    }

    /// The specification's limit on a whole message.
    public static let maxSize = 128 << 20

    public var kind: Kind
    public var flags: UInt8 = 0
    public var serial: UInt32
    public var path: String?
    public var interface: String?
    public var member: String?
    public var errorName: String?
    public var replySerial: UInt32?
    public var destination: String?
    public var sender: String?
    public var body: [DBusValue] = []

    public init(kind: Kind, serial: UInt32, path: String? = nil, interface: String? = nil, member: String? = nil,
                destination: String? = nil, body: [DBusValue] = [])
    {
        self.kind = kind
        self.serial = serial
        self.path = path
        self.interface = interface
        self.member = member
        self.destination = destination
        self.body = body
    }

    public static func methodCall(serial: UInt32, destination: String?, path: String, interface: String,
                                  member: String, _ arguments: [DBusValue] = []) -> DBusMessage
    {
        DBusMessage(kind: .methodCall, serial: serial, path: path, interface: interface, member: member,
                    destination: destination, body: arguments)
    }

    public var bodySignature: String { body.map(\.signature).joined() }

    public func encode() -> [UInt8] {
        var fields: [DBusValue] = []
        func field(_ code: UInt8, _ value: DBusValue?) {
            if let value { fields.append(.structure([.byte(code), .variant(value)])) }
        }
        field(1, path.map { .objectPath($0) })
        field(2, interface.map { .string($0) })
        field(3, member.map { .string($0) })
        field(4, errorName.map { .string($0) })
        field(5, replySerial.map { .uint32($0) })
        field(6, destination.map { .string($0) })
        field(7, sender.map { .string($0) })
        if !body.isEmpty { field(8, .signature(bodySignature)) }

        var bodyWriter = DBusWriter()
        for value in body { bodyWriter.write(value) }  // the body starts 8-aligned, so alignment carries over

        var w = DBusWriter()
        w.bytes = [UInt8(ascii: "l"), kind.rawValue, flags, 1]
        w.u32(UInt32(bodyWriter.bytes.count))
        w.u32(serial)
        w.write(.array(elementSignature: "(yv)", fields))
        w.pad(to: 8)
        return w.bytes + bodyWriter.bytes
    }

    /// Length of the first message in `bytes`, once its fixed header is there.
    public static func frameLength(_ bytes: ArraySlice<UInt8>) throws(DBusError) -> Int? {
        guard bytes.count >= 16 else { return nil }
        let r = LEReader(bytes)
        guard r.u8(0) == UInt8(ascii: "l") else { throw .malformed("not little-endian (\(r.u8(0)!)); only 'l' is spoken") }
        guard r.u8(3) == 1 else { throw .malformed("protocol version \(r.u8(3)!)") }
        let bodyLength = Int(r.u32(4)!)
        let fieldsLength = Int(r.u32(12)!)
        let total = (16 + fieldsLength + 7) / 8 * 8 + bodyLength
        guard total <= maxSize else { throw .tooLarge(total) }
        return total
    }

    /// Decodes the first message of `bytes`; nil until all of it has arrived.
    /// Takes the first message off the front of `buffer`; nil while it has not all arrived.
    public static func takeNext(from buffer: inout [UInt8]) throws(DBusError) -> DBusMessage? {
        guard let (message, consumed) = try decode(buffer[...]) else { return nil }
        buffer.removeFirst(consumed)
        return message
    }

    public static func decode(_ bytes: ArraySlice<UInt8>) throws(DBusError) -> (DBusMessage, consumed: Int)? {
        guard let total = try frameLength(bytes), bytes.count >= total else { return nil }
        let message = bytes.prefix(total)
        let r = LEReader(message)
        guard let kind = Kind(rawValue: r.u8(1)!) else { throw .malformed("message type \(r.u8(1)!)") }
        let bodyLength = Int(r.u32(4)!)
        var out = DBusMessage(kind: kind, serial: r.u32(8)!)
        out.flags = r.u8(2)!

        var reader = DBusReader(message, offset: 12, end: total - bodyLength)
        guard case .array(_, let fields) = try reader.read("a(yv)") else { throw .malformed("header fields") }
        var signature = ""
        for case .structure(let pair) in fields {
            guard pair.count == 2, case .byte(let code) = pair[0], case .variant(let value) = pair[1] else { continue }
            switch code {
            case 1: out.path = value.stringValue
            case 2: out.interface = value.stringValue
            case 3: out.member = value.stringValue
            case 4: out.errorName = value.stringValue
            case 5: out.replySerial = value.uint32Value
            case 6: out.destination = value.stringValue
            case 7: out.sender = value.stringValue
            case 8: signature = value.stringValue ?? ""
            default: break  // unknown fields are ignored, as the specification says
            }
        }
        var body = DBusReader(message, offset: total - bodyLength, end: total)
        for type in try DBusSignature.split(signature) {
            out.body.append(try body.read(type))
        }
        return (out, total)
    }
}

/// The SASL exchange before the first message ("Authentication Protocol"):
/// EXTERNAL with our uid, the only mechanism the system bus needs.
public enum DBusAuth {
    /// The NUL byte the specification requires first, then AUTH EXTERNAL.
    public static func start(uid: UInt32) -> [UInt8] {
        let hex = Array(String(uid).utf8).map { String($0, radix: 16) }.joined()
        return [0] + Array("AUTH EXTERNAL \(hex)\r\n".utf8)
    }

    public static let begin = Array("BEGIN\r\n".utf8)

    public enum Reply: Equatable, Sendable {
        case ok(guid: String)
        case rejected(String)
    }

    /// Parses the server's reply line (without CR LF).
    public static func parse(_ line: String) -> Reply {
        if line.hasPrefix("OK ") { return .ok(guid: String(line.dropFirst(3))) }
        return .rejected(line)
    }

    /// Takes the server's reply line off the front of `buffer` and parses it; nil
    /// while the line has not all arrived.
    public static func takeReply(from buffer: inout [UInt8]) -> Reply? {
        guard let end = buffer.firstIndex(of: 0x0A) else { return nil }
        var line = buffer[..<end]
        while let last = line.last, last == 0x0D || last == 0x20 { line = line.dropLast() }
        buffer.removeFirst(end + 1)
        return parse(String(decoding: line, as: UTF8.self))
    }
}
