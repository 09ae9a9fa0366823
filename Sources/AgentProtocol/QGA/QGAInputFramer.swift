/// Splits the byte stream a guest agent reads into complete JSON requests, as
/// QEMU's json-lexer/json-streamer do (protocols.md §1.1-1.3): requests may be
/// fragmented or concatenated, with or without newlines between them.
///
/// Recovery rules (the agent must keep serving whatever arrives):
/// - 0xFF/0xFE (impossible in UTF-8) and ASCII control characters other than
///   TAB/CR/LF outside a string discard any half-read request and produce one
///   error, which clients ignore. This is how a host resynchronises the agent.
/// - A raw control character inside a string (JSON forbids it) produces one
///   error and the rest of that line is skipped.
/// - A request longer than `maxRequestBytes` or nested deeper than `maxDepth`
///   produces one error; the rest of it is skipped up to the next newline or
///   control byte, so one bad request costs one error line, not thousands.
public struct QGAInputFramer: Sendable {
    public enum Output: Sendable, Equatable {
        /// A complete JSON text, parsed. Not yet checked to be a request.
        case value(JSONValue)
        /// Input that could not become a value. Reply with it and carry on.
        case error(QGAError)
        /// A flush byte (0xFF, 0xFE or a control character): the host gave up on
        /// everything before it. Reply with the error, and forget pending work.
        case resynchronise(QGAError)
    }

    /// QEMU's json-streamer limit for one token (64 MiB); we apply it to the whole request.
    public static let defaultMaxRequestBytes = 64 << 20

    public let maxRequestBytes: Int
    public let maxDepth: Int

    private var buffer: [UInt8] = []
    private var depth = 0
    private var quote: UInt8? = nil
    private var escaped = false
    private var skippingToSyncPoint = false

    public init(maxRequestBytes: Int = defaultMaxRequestBytes, maxDepth: Int = JSONParser.defaultMaxDepth) {
        self.maxRequestBytes = maxRequestBytes
        self.maxDepth = maxDepth
    }

    /// Bytes of a request still waiting for its end.
    public var pendingByteCount: Int { buffer.count }

    // Concrete overloads rather than one generic over Sequence: a generic call
    // across modules makes the runtime build type metadata from mangled names
    // on every call, which costs the guest agent time and resident memory.
    public mutating func feed(_ bytes: [UInt8]) -> [Output] {
        bytes.withUnsafeBufferPointer { feed($0) }
    }

    public mutating func feed(_ bytes: ArraySlice<UInt8>) -> [Output] {
        bytes.withUnsafeBufferPointer { feed($0) }
    }

    public mutating func feed(_ bytes: UnsafeBufferPointer<UInt8>) -> [Output] {
        var outputs: [Output] = []
        for b in bytes { consume(b, into: &outputs) }
        return outputs
    }

    /// The host went away: whatever was half-read belongs to nobody.
    public mutating func reset() {
        buffer.removeAll(keepingCapacity: true)
        depth = 0
        quote = nil
        escaped = false
        skippingToSyncPoint = false
    }

    private static func isSyncByte(_ b: UInt8) -> Bool {
        b == 0xFF || b == 0xFE || (b < 0x20 && b != 0x09 && b != 0x0A && b != 0x0D)
    }

    private static func isWhitespace(_ b: UInt8) -> Bool {
        b == 0x20 || b == 0x09 || b == 0x0A || b == 0x0D
    }

    /// qemu-ga's text; a byte that is not ASCII shows as U+FFFD, as QEMU prints it.
    private static func strayDescription(_ b: UInt8) -> String {
        "JSON parse error, stray '\(JSONParser.displayed(b))'"
    }

    private mutating func consume(_ b: UInt8, into outputs: inout [Output]) {
        if skippingToSyncPoint {
            if b == 0x0A || Self.isSyncByte(b) { skippingToSyncPoint = false }
            return
        }
        if Self.isSyncByte(b) || (quote != nil && b < 0x20) {
            // qemu-ga answers every such byte with an error line; clients ignore it.
            let brokeString = quote != nil && b < 0x20
            reset()
            let error = QGAError.generic(Self.strayDescription(b))
            outputs.append(brokeString ? .error(error) : .resynchronise(error))
            // A raw control character inside a string leaves us mid-string: the
            // rest of that line cannot be read reliably, so skip to its end.
            if brokeString && b != 0x0A { skippingToSyncPoint = true }
            return
        }
        if let q = quote {
            buffer.append(b)
            if escaped {
                escaped = false
            } else if b == UInt8(ascii: "\\") {
                escaped = true
            } else if b == q {
                quote = nil
                if depth == 0 { complete(into: &outputs) }
            }
            checkSize(into: &outputs)
            return
        }
        switch b {
        case UInt8(ascii: "{"), UInt8(ascii: "["):
            flushScalar(into: &outputs)
            depth += 1
            buffer.append(b)
            if depth > maxDepth {
                reset()
                skippingToSyncPoint = true
                outputs.append(.error(.generic("JSON parse error, nesting too deep (limit \(maxDepth))")))
                return
            }
        case UInt8(ascii: "}"), UInt8(ascii: "]"):
            flushScalar(into: &outputs)
            guard depth > 0 else {
                outputs.append(.error(.generic("JSON parse error, expecting value")))
                return
            }
            depth -= 1
            buffer.append(b)
            if depth == 0 { complete(into: &outputs) }
        case UInt8(ascii: "\""), UInt8(ascii: "'"):
            flushScalar(into: &outputs)
            quote = b
            buffer.append(b)
        default:
            if depth == 0 {
                // Outside any object: whitespace ends a bare scalar, which is never
                // a valid request but must still be answered once.
                if Self.isWhitespace(b) {
                    flushScalar(into: &outputs)
                } else {
                    buffer.append(b)
                }
            } else {
                buffer.append(b)
            }
        }
        checkSize(into: &outputs)
    }

    private mutating func flushScalar(into outputs: inout [Output]) {
        if depth == 0, quote == nil, !buffer.isEmpty { complete(into: &outputs) }
    }

    private mutating func checkSize(into outputs: inout [Output]) {
        guard buffer.count > maxRequestBytes else { return }
        reset()
        skippingToSyncPoint = true
        outputs.append(.error(.generic("JSON parse error, request larger than \(maxRequestBytes) bytes")))
    }

    private mutating func complete(into outputs: inout [Output]) {
        let text = buffer
        buffer.removeAll(keepingCapacity: true)
        depth = 0
        do {
            outputs.append(.value(try JSONParser.parse(text, maxDepth: maxDepth)))
        } catch {
            outputs.append(.error(.generic(error.description)))
        }
    }
}
