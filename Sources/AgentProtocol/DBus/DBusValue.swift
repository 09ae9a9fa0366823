/// D-Bus values and their wire encoding (the D-Bus specification, "Message
/// Protocol": marshalling in little-endian, alignment relative to the start of
/// the message). Only what a client needs; no file descriptors.
///
/// Why our own: the guest agent is a fully static executable and Debian ships
/// no static libsystemd, so sd-bus cannot be linked in (protocol.md §1.9).
public indirect enum DBusValue: Sendable, Equatable {
    case byte(UInt8)
    case boolean(Bool)
    case int16(Int16)
    case uint16(UInt16)
    case int32(Int32)
    case uint32(UInt32)
    case int64(Int64)
    case uint64(UInt64)
    case double(Double)
    case string(String)
    case objectPath(String)
    case signature(String)
    /// `elementSignature` is needed for empty arrays.
    case array(elementSignature: String, [DBusValue])
    case structure([DBusValue])
    case dictEntry(DBusValue, DBusValue)
    case variant(DBusValue)

    public var signature: String {
        switch self {
        case .byte: return "y"
        case .boolean: return "b"
        case .int16: return "n"
        case .uint16: return "q"
        case .int32: return "i"
        case .uint32: return "u"
        case .int64: return "x"
        case .uint64: return "t"
        case .double: return "d"
        case .string: return "s"
        case .objectPath: return "o"
        case .signature: return "g"
        case .array(let element, _): return "a" + element
        case .structure(let fields): return "(" + fields.map(\.signature).joined() + ")"
        case .dictEntry(let k, let v): return "{" + k.signature + v.signature + "}"
        case .variant: return "v"
        }
    }

    public var stringValue: String? {
        switch self {
        case .string(let s), .objectPath(let s), .signature(let s): return s
        case .variant(let v): return v.stringValue
        default: return nil
        }
    }

    public var uint32Value: UInt32? {
        switch self {
        case .uint32(let v): return v
        case .variant(let v): return v.uint32Value
        default: return nil
        }
    }

}

public enum DBusError: Error, Equatable, Sendable, CustomStringConvertible {
    case truncated
    case malformed(String)
    case tooLarge(Int)

    public var description: String {
        switch self {
        case .truncated: return "D-Bus message truncated"
        case .malformed(let why): return "malformed D-Bus message: \(why)"
        case .tooLarge(let n): return "D-Bus message of \(n) bytes is over the 128 MiB limit"
        }
    }
}

/// Appends values with D-Bus alignment; offsets count from the message start.
struct DBusWriter {
    var bytes: [UInt8] = []

    mutating func pad(to alignment: Int) {
        while bytes.count % alignment != 0 { bytes.append(0) }
    }

    mutating func u16(_ v: UInt16) {
        pad(to: 2)
        bytes.appendLE(v)
    }

    mutating func u32(_ v: UInt32) {
        pad(to: 4)
        bytes.appendLE(v)
    }

    mutating func u64(_ v: UInt64) {
        pad(to: 8)
        bytes.appendLE(UInt32(truncatingIfNeeded: v))
        bytes.appendLE(UInt32(truncatingIfNeeded: v >> 32))
    }

    mutating func write(_ value: DBusValue) {
        switch value {
        case .byte(let b): bytes.append(b)
        case .boolean(let b): u32(b ? 1 : 0)
        case .int16(let v): u16(UInt16(bitPattern: v))
        case .uint16(let v): u16(v)
        case .int32(let v): u32(UInt32(bitPattern: v))
        case .uint32(let v): u32(v)
        case .int64(let v): u64(UInt64(bitPattern: v))
        case .uint64(let v): u64(v)
        case .double(let v): u64(v.bitPattern)
        case .string(let s), .objectPath(let s):
            let utf8 = Array(s.utf8)
            u32(UInt32(utf8.count))
            bytes += utf8
            bytes.append(0)
        case .signature(let s):
            bytes.append(UInt8(s.utf8.count))
            bytes += Array(s.utf8)
            bytes.append(0)
        case .array(let element, let items):
            u32(0)
            let lengthAt = bytes.count - 4
            pad(to: DBusSignature.alignment(of: element))
            let start = bytes.count
            for item in items { write(item) }
            let length = UInt32(bytes.count - start)
            for i in 0..<4 { bytes[lengthAt + i] = UInt8(truncatingIfNeeded: length >> (8 * i)) }
        case .structure(let fields):
            pad(to: 8)
            for f in fields { write(f) }
        case .dictEntry(let k, let v):
            pad(to: 8)
            write(k)
            write(v)
        case .variant(let inner):
            write(.signature(inner.signature))
            write(inner)
        }
    }
}

/// Reads values by signature, with every length and offset checked.
struct DBusReader {
    let bytes: ArraySlice<UInt8>
    /// Offset from the message start (alignment is relative to it).
    var offset: Int
    let end: Int
    static let maxDepth = 32
    static let maxArrayBytes = 64 << 20

    init(_ bytes: ArraySlice<UInt8>, offset: Int, end: Int) {
        self.bytes = bytes
        self.offset = offset
        self.end = end
    }

    mutating func align(_ n: Int) throws(DBusError) {
        let aligned = (offset + n - 1) / n * n
        guard aligned <= end else { throw .truncated }
        offset = aligned
    }

    mutating func take(_ n: Int) throws(DBusError) -> ArraySlice<UInt8> {
        guard n >= 0, offset + n <= end else { throw .truncated }
        let start = bytes.startIndex + offset
        offset += n
        return bytes[start..<start + n]
    }

    mutating func u16() throws(DBusError) -> UInt16 {
        try align(2)
        return LEReader(try take(2)).u16(0)!
    }

    mutating func u32() throws(DBusError) -> UInt32 {
        try align(4)
        return LEReader(try take(4)).u32(0)!
    }

    mutating func u64() throws(DBusError) -> UInt64 {
        try align(8)
        return LEReader(try take(8)).u64(0)!
    }

    mutating func text(length: Int) throws(DBusError) -> String {
        let raw = try take(length)
        guard try take(1).first == 0 else { throw .malformed("string without its NUL") }
        guard let s = String(validating: raw, as: UTF8.self) else { throw .malformed("string is not UTF-8") }
        return s
    }

    mutating func read(_ signature: String, depth: Int = 0) throws(DBusError) -> DBusValue {
        guard depth < Self.maxDepth else { throw .malformed("nesting deeper than \(Self.maxDepth)") }
        var chars = Substring(signature)
        let value = try read(single: &chars, depth: depth)
        guard chars.isEmpty else { throw .malformed("signature \(signature) is not one complete type") }
        return value
    }

    private mutating func read(single sig: inout Substring, depth: Int) throws(DBusError) -> DBusValue {
        guard depth < Self.maxDepth else { throw .malformed("nesting deeper than \(Self.maxDepth)") }
        guard let code = sig.first else { throw .malformed("empty signature") }
        sig = sig.dropFirst()
        switch code {
        case "y": return .byte(try take(1).first!)
        case "b":
            let v = try u32()
            guard v <= 1 else { throw .malformed("boolean \(v)") }
            return .boolean(v == 1)
        case "n": return .int16(Int16(bitPattern: try u16()))
        case "q": return .uint16(try u16())
        case "i": return .int32(Int32(bitPattern: try u32()))
        case "u": return .uint32(try u32())
        case "x": return .int64(Int64(bitPattern: try u64()))
        case "t": return .uint64(try u64())
        case "d": return .double(Double(bitPattern: try u64()))
        case "s", "o":
            let n = Int(try u32())
            let s = try text(length: n)
            return code == "s" ? .string(s) : .objectPath(s)
        case "g":
            let n = Int(try take(1).first!)
            return .signature(try text(length: n))
        case "v":
            let n = Int(try take(1).first!)
            let inner = try text(length: n)
            return .variant(try read(inner, depth: depth + 1))
        case "a":
            let element = try DBusSignature.firstCompleteType(sig)
            sig = sig.dropFirst(element.count)
            let length = Int(try u32())
            guard length <= Self.maxArrayBytes else { throw .malformed("array of \(length) bytes") }
            try align(DBusSignature.alignment(of: String(element)))
            let stop = offset + length
            guard stop <= end else { throw .truncated }
            var items: [DBusValue] = []
            while offset < stop {
                var e = element
                let before = offset
                items.append(try read(single: &e, depth: depth + 1))
                // An element that takes no bytes would repeat forever (found by the
                // dbus-message fuzz target: "a()" took 2 GB before anything stopped it).
                guard offset > before else { throw .malformed("array of elements that take no bytes (\(element))") }
            }
            guard offset == stop else { throw .malformed("array element runs past the array") }
            return .array(elementSignature: String(element), items)
        case "(":
            try align(8)
            // The specification allows no empty structures.
            guard sig.first != ")" else { throw .malformed("empty structure") }
            var fields: [DBusValue] = []
            while sig.first != ")" {
                guard !sig.isEmpty else { throw .malformed("unclosed struct") }
                fields.append(try read(single: &sig, depth: depth + 1))
            }
            sig = sig.dropFirst()
            return .structure(fields)
        case "{":
            try align(8)
            let k = try read(single: &sig, depth: depth + 1)
            let v = try read(single: &sig, depth: depth + 1)
            guard sig.first == "}" else { throw .malformed("dict entry without its }") }
            sig = sig.dropFirst()
            return .dictEntry(k, v)
        default:
            throw .malformed("unsupported type code \(code)")
        }
    }
}

enum DBusSignature {
    static func alignment(of signature: String) -> Int {
        switch signature.first {
        case "y", "g", "v": return 1
        case "n", "q": return 2
        case "x", "t", "d", "(", "{": return 8
        default: return 4  // b i u s o a (and h, unused)
        }
    }

    /// The first complete type of `sig` (e.g. "a(su)" of "a(su)s").
    static func firstCompleteType(_ sig: Substring) throws(DBusError) -> Substring {
        var depth = 0
        var i = sig.startIndex
        while i < sig.endIndex {
            let c = sig[i]
            i = sig.index(after: i)
            switch c {
            case "a": continue
            case "(", "{": depth += 1
            case ")", "}":
                depth -= 1
                if depth < 0 { throw .malformed("unbalanced signature") }
            default: break
            }
            if depth == 0 { return sig[sig.startIndex..<i] }
        }
        throw .malformed("incomplete signature \(sig)")
    }

    /// Splits a body signature into its complete types.
    static func split(_ sig: String) throws(DBusError) -> [String] {
        var rest = Substring(sig)
        var out: [String] = []
        while !rest.isEmpty {
            let t = try firstCompleteType(rest)
            out.append(String(t))
            rest = rest.dropFirst(t.count)
        }
        return out
    }
}
