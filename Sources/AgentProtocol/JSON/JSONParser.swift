/// Why a JSON text was rejected. `description` is the text a peer sees in
/// `{"error":{"class":"GenericError","desc":...}}`.
public struct JSONParseError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public var offset: Int
    public var description: String { "JSON parse error, \(message)" }
}

/// Parses one complete JSON text. Accepts what QEMU's parser accepts beyond RFC
/// 8259: single-quoted strings and the `\'` escape. Nesting is limited, as in
/// QEMU's json-streamer (1024), so hostile input cannot exhaust the stack.
public struct JSONParser {
    public static let defaultMaxDepth = 1024

    private let bytes: [UInt8]
    private var pos: Int
    private let end: Int
    private let maxDepth: Int

    public static func parse(_ bytes: [UInt8], maxDepth: Int = defaultMaxDepth) throws(JSONParseError) -> JSONValue {
        var parser = JSONParser(bytes: bytes, maxDepth: maxDepth)
        parser.skipWhitespace()
        let value = try parser.parseValue(depth: 0)
        parser.skipWhitespace()
        guard parser.pos == parser.end else { throw parser.error("trailing characters after value") }
        return value
    }

    public static func parse(_ text: String, maxDepth: Int = defaultMaxDepth) throws(JSONParseError) -> JSONValue {
        try parse(Array(text.utf8), maxDepth: maxDepth)
    }

    private init(bytes: [UInt8], maxDepth: Int) {
        self.bytes = bytes
        self.pos = 0
        self.end = bytes.count
        self.maxDepth = maxDepth
    }

    private func error(_ message: String) -> JSONParseError {
        JSONParseError(message: message, offset: pos)
    }

    private mutating func skipWhitespace() {
        while pos < end {
            switch bytes[pos] {
            case 0x20, 0x09, 0x0A, 0x0D: pos += 1
            default: return
            }
        }
    }

    private mutating func parseValue(depth: Int) throws(JSONParseError) -> JSONValue {
        guard pos < end else { throw error("expecting value") }
        switch bytes[pos] {
        case UInt8(ascii: "{"): return try parseObject(depth: depth + 1)
        case UInt8(ascii: "["): return try parseArray(depth: depth + 1)
        case UInt8(ascii: "\""), UInt8(ascii: "'"): return .string(try parseString())
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try parseNumber()
        case let b where isIdentifierByte(b): return try parseKeyword()
        case UInt8(ascii: "}"), UInt8(ascii: "]"): throw error("expecting value")
        case let b: throw error("stray '\(Self.displayed(b))'")
        }
    }

    /// How QEMU quotes a stray byte: itself if ASCII, U+FFFD otherwise.
    static func displayed(_ b: UInt8) -> String {
        b < 0x80 ? String(Unicode.Scalar(b)) : "\u{FFFD}"
    }

    private mutating func parseKeyword() throws(JSONParseError) -> JSONValue {
        let start = pos
        while pos < end, isIdentifierByte(bytes[pos]) { pos += 1 }
        let word = String(decoding: bytes[start..<pos], as: UTF8.self)
        switch word {
        case "true": return .bool(true)
        case "false": return .bool(false)
        case "null": return .null
        default:
            pos = start
            throw error("invalid keyword '\(word)'")
        }
    }

    private func isIdentifierByte(_ b: UInt8) -> Bool {
        (b >= 0x61 && b <= 0x7A) || (b >= 0x41 && b <= 0x5A) || (b >= 0x30 && b <= 0x39) || b == 0x5F
    }

    private mutating func parseObject(depth: Int) throws(JSONParseError) -> JSONValue {
        guard depth <= maxDepth else { throw error("nesting too deep (limit \(maxDepth))") }
        pos += 1
        var object = JSONObject()
        skipWhitespace()
        if pos < end, bytes[pos] == UInt8(ascii: "}") {
            pos += 1
            return .object(object)
        }
        while true {
            skipWhitespace()
            guard pos < end, bytes[pos] == UInt8(ascii: "\"") || bytes[pos] == UInt8(ascii: "'") else {
                throw error("key is not a string in object")
            }
            let key = try parseString()
            skipWhitespace()
            guard pos < end, bytes[pos] == UInt8(ascii: ":") else { throw error("missing : in object pair") }
            pos += 1
            skipWhitespace()
            object[key] = try parseValue(depth: depth)
            skipWhitespace()
            guard pos < end else { throw error("premature end of object") }
            if bytes[pos] == UInt8(ascii: ",") {
                pos += 1
                continue
            }
            if bytes[pos] == UInt8(ascii: "}") {
                pos += 1
                return .object(object)
            }
            throw error("expected separator in dict")
        }
    }

    private mutating func parseArray(depth: Int) throws(JSONParseError) -> JSONValue {
        guard depth <= maxDepth else { throw error("nesting too deep (limit \(maxDepth))") }
        pos += 1
        var items: [JSONValue] = []
        skipWhitespace()
        if pos < end, bytes[pos] == UInt8(ascii: "]") {
            pos += 1
            return .array(items)
        }
        while true {
            skipWhitespace()
            items.append(try parseValue(depth: depth))
            skipWhitespace()
            guard pos < end else { throw error("premature end of array") }
            if bytes[pos] == UInt8(ascii: ",") {
                pos += 1
                continue
            }
            if bytes[pos] == UInt8(ascii: "]") {
                pos += 1
                return .array(items)
            }
            throw error("expected separator in list")
        }
    }

    private mutating func parseHex4() throws(JSONParseError) -> UInt16 {
        guard end - pos >= 4 else { throw error("invalid escape sequence in string") }
        var v: UInt16 = 0
        for _ in 0..<4 {
            let b = bytes[pos]
            let d: UInt8
            switch b {
            case 0x30...0x39: d = b - 0x30
            case 0x41...0x46: d = b - 0x41 + 10
            case 0x61...0x66: d = b - 0x61 + 10
            default: throw error("invalid hex escape sequence in string")
            }
            v = v << 4 | UInt16(d)
            pos += 1
        }
        return v
    }

    private mutating func parseString() throws(JSONParseError) -> String {
        let quote = bytes[pos]
        pos += 1
        var raw: [UInt8] = []
        while true {
            guard pos < end else { throw error("missing terminating quote in string") }
            let b = bytes[pos]
            if b == quote {
                pos += 1
                break
            }
            if b < 0x20 { throw error("control character in string") }
            if b != UInt8(ascii: "\\") {
                raw.append(b)
                pos += 1
                continue
            }
            pos += 1
            guard pos < end else { throw error("missing terminating quote in string") }
            let e = bytes[pos]
            pos += 1
            switch e {
            case UInt8(ascii: "\""), UInt8(ascii: "'"), UInt8(ascii: "\\"), UInt8(ascii: "/"): raw.append(e)
            case UInt8(ascii: "b"): raw.append(0x08)
            case UInt8(ascii: "f"): raw.append(0x0C)
            case UInt8(ascii: "n"): raw.append(0x0A)
            case UInt8(ascii: "r"): raw.append(0x0D)
            case UInt8(ascii: "t"): raw.append(0x09)
            case UInt8(ascii: "u"):
                var unit = try parseHex4()
                var scalar: Unicode.Scalar?
                if (0xD800..<0xDC00).contains(unit) {
                    // A high surrogate must be followed by an escaped low surrogate.
                    guard end - pos >= 6, bytes[pos] == UInt8(ascii: "\\"), bytes[pos + 1] == UInt8(ascii: "u") else {
                        throw error("missing low surrogate in string")
                    }
                    pos += 2
                    let low = try parseHex4()
                    guard (0xDC00..<0xE000).contains(low) else { throw error("invalid low surrogate in string") }
                    let combined = 0x10000 + ((UInt32(unit) - 0xD800) << 10) + (UInt32(low) - 0xDC00)
                    scalar = Unicode.Scalar(combined)
                    unit = 0
                } else if (0xDC00..<0xE000).contains(unit) {
                    throw error("lone low surrogate in string")
                } else {
                    scalar = Unicode.Scalar(unit)
                }
                guard let scalar else { throw error("invalid escape sequence in string") }
                raw.append(contentsOf: String(scalar).utf8)
            default:
                throw error("invalid escape sequence in string")
            }
        }
        guard let s = String(validating: raw, as: UTF8.self) else { throw error("invalid UTF-8 sequence in string") }
        return s
    }

    private mutating func parseNumber() throws(JSONParseError) -> JSONValue {
        let start = pos
        var isInteger = true
        if bytes[pos] == UInt8(ascii: "-") { pos += 1 }
        guard pos < end, isDigit(bytes[pos]) else { throw error("invalid number") }
        if bytes[pos] == UInt8(ascii: "0") {
            pos += 1
        } else {
            while pos < end, isDigit(bytes[pos]) { pos += 1 }
        }
        if pos < end, bytes[pos] == UInt8(ascii: ".") {
            isInteger = false
            pos += 1
            guard pos < end, isDigit(bytes[pos]) else { throw error("invalid number") }
            while pos < end, isDigit(bytes[pos]) { pos += 1 }
        }
        if pos < end, bytes[pos] == UInt8(ascii: "e") || bytes[pos] == UInt8(ascii: "E") {
            isInteger = false
            pos += 1
            if pos < end, bytes[pos] == UInt8(ascii: "+") || bytes[pos] == UInt8(ascii: "-") { pos += 1 }
            guard pos < end, isDigit(bytes[pos]) else { throw error("invalid number") }
            while pos < end, isDigit(bytes[pos]) { pos += 1 }
        }
        if pos < end, isIdentifierByte(bytes[pos]) { throw error("invalid number") }
        let text = String(decoding: bytes[start..<pos], as: UTF8.self)
        // QEMU: int64 if it fits, else uint64, else a double.
        if isInteger {
            if let i = Int64(text) { return .int(i) }
            if let u = UInt64(text) { return .uint(u) }
        }
        guard let d = Double(text), d.isFinite else { throw error("number out of range") }
        return .double(d)
    }

    private func isDigit(_ b: UInt8) -> Bool { b >= 0x30 && b <= 0x39 }
}
