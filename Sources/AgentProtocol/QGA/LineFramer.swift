/// Splits a reply stream into lines, as host-side clients of line-oriented JSON
/// channels (QGA replies, QMP, our control socket) read it. CR before LF is
/// dropped. With `delimiterResets`, a 0xFF byte discards any partial line and is
/// reported, which is how a QGA client finds the start of a sync-delimited reply.
public struct LineFramer: Sendable {
    public enum Output: Sendable, Equatable {
        case line([UInt8])
        /// The 0xFF byte that precedes a `guest-sync-delimited` reply.
        case delimiter
        /// A line exceeded `maxLineBytes`; it was dropped up to its newline.
        case oversized(Int)
    }

    /// libvirt refuses agent replies over 10 MiB; QMP clients use the same bound.
    public static let defaultMaxLineBytes = 10 << 20

    public let maxLineBytes: Int
    public let delimiterResets: Bool
    private var buffer: [UInt8] = []
    private var droppedBytes: Int? = nil

    public init(maxLineBytes: Int = defaultMaxLineBytes, delimiterResets: Bool = false) {
        self.maxLineBytes = maxLineBytes
        self.delimiterResets = delimiterResets
    }

    public mutating func reset() {
        buffer.removeAll(keepingCapacity: true)
        droppedBytes = nil
    }

    public mutating func feed(_ bytes: [UInt8]) -> [Output] {
        bytes.withUnsafeBufferPointer { feed($0) }
    }

    public mutating func feed(_ bytes: UnsafeBufferPointer<UInt8>) -> [Output] {
        var outputs: [Output] = []
        for b in bytes {
            if delimiterResets && b == QGAReply.delimiter {
                reset()
                outputs.append(.delimiter)
                continue
            }
            if b == 0x0A {
                if let dropped = droppedBytes {
                    outputs.append(.oversized(dropped))
                } else {
                    if buffer.last == 0x0D { buffer.removeLast() }
                    outputs.append(.line(buffer))
                }
                reset()
                continue
            }
            if droppedBytes != nil {
                droppedBytes! += 1
                continue
            }
            buffer.append(b)
            if buffer.count > maxLineBytes {
                droppedBytes = buffer.count
                buffer.removeAll()
            }
        }
        return outputs
    }
}
