/// The byte stream on the `com.redhat.spice.0` port: chunks
/// (`VDIChunkHeader` {port, size}) carrying messages (`VDAgentMessage`
/// header {protocol, type, opaque, size} + payload). A message may span
/// chunks; chunks of the two ports interleave, so each port reassembles alone.
///
/// Robustness (the stream must stay usable): a message whose declared size is
/// over `maxMessageSize` is skipped without buffering it; an unknown port,
/// protocol or type drops that message and framing continues at the next chunk.
public struct VDAgentReader: Sendable {
    public enum Output: Sendable, Equatable {
        case message(VDAgentPort, VDAgentMessageType, [UInt8])
        case dropped(VDAgentError)
    }

    private struct Assembly {
        var type: UInt32 = 0
        var expected = 0
        var payload: [UInt8] = []
        var skipping = false
        var header: [UInt8] = []
    }

    public let maxMessageSize: Int
    private var buffer: [UInt8] = []
    private var chunkPort: UInt32?
    private var chunkRemaining = 0
    /// A message start in the current chunk had the wrong protocol: the rest of
    /// the chunk is dropped, however many reads it takes to arrive.
    private var distrustChunk = false
    private var assemblies: [UInt32: Assembly] = [:]

    public init(maxMessageSize: Int = VDAgent.defaultMaxMessageSize) {
        self.maxMessageSize = maxMessageSize
    }

    public mutating func feed(_ bytes: [UInt8]) -> [Output] {
        var outputs: [Output] = []
        buffer += bytes
        var offset = 0
        while true {
            if chunkPort == nil {
                guard buffer.count - offset >= VDAgent.chunkHeaderSize else { break }
                let r = LEReader(buffer[offset..<offset + 8])
                chunkPort = r.u32(0)!
                chunkRemaining = Int(r.u32(4)!)
                offset += VDAgent.chunkHeaderSize
                if VDAgentPort(rawValue: chunkPort!) == nil {
                    outputs.append(.dropped(.badPort(chunkPort!)))
                }
            }
            let available = min(chunkRemaining, buffer.count - offset)
            if available == 0 && chunkRemaining > 0 { break }
            let piece = buffer[offset..<offset + available]
            offset += available
            chunkRemaining -= available
            if let port = chunkPort, VDAgentPort(rawValue: port) != nil, !distrustChunk {
                distrustChunk = !consume(piece, port: port, into: &outputs)
            }
            if chunkRemaining == 0 {
                chunkPort = nil
                distrustChunk = false
            }
        }
        buffer.removeFirst(offset)
        return outputs
    }

    /// Returns false when the rest of the chunk cannot be trusted to start a message.
    private mutating func consume(_ piece: ArraySlice<UInt8>, port: UInt32, into outputs: inout [Output]) -> Bool {
        // Taken out of the dictionary so `a.payload` has one owner: appending to
        // a copy that the dictionary still shares would copy the whole payload
        // on every chunk (quadratic: a 32 MiB paste never finished under TCG).
        var a = assemblies.removeValue(forKey: port) ?? Assembly()
        let firstOutput = outputs.count
        var rest = piece
        var trusted = true
        while !rest.isEmpty {
            if a.expected == 0 && !a.skipping && a.payload.isEmpty {
                // Collecting a message header (it may itself be split across chunks).
                let take = min(VDAgent.messageHeaderSize - a.header.count, rest.count)
                a.header += rest.prefix(take)
                rest = rest.dropFirst(take)
                guard a.header.count == VDAgent.messageHeaderSize else { break }
                let r = LEReader(a.header[...])
                let proto = r.u32(0)!
                a.type = r.u32(4)!
                let size = Int(r.u32(16)!)
                a.header = []
                if proto != VDAgent.protocolVersion {
                    outputs.append(.dropped(.badProtocol(proto)))
                    // The rest of this chunk cannot be trusted to start a message
                    // (found by the vdagent-reader fuzz target: dropping only the
                    // rest of this read made the outcome depend on read boundaries).
                    a = Assembly()
                    trusted = false
                    break
                }
                if size > maxMessageSize {
                    outputs.append(.dropped(.oversize(declared: size, limit: maxMessageSize)))
                    a.skipping = true
                }
                a.expected = size
                if size == 0 {
                    finish(&a, port: port, into: &outputs)
                }
                continue
            }
            let take = min(a.expected, rest.count)
            if !a.skipping { a.payload += rest.prefix(take) }
            a.expected -= take
            rest = rest.dropFirst(take)
            if a.expected == 0 { finish(&a, port: port, into: &outputs) }
        }
        assemblies[port] = a
        if port == VDAgentPort.server.rawValue,
           outputs[firstOutput...].contains(where: { $0 == .message(.server, .clientDisconnected, []) })
        {
            // The client went away: whatever it was in the middle of sending
            // will never be finished (spice-vdagentd resets here too).
            assemblies[VDAgentPort.client.rawValue] = nil
        }
        return trusted
    }

    private func finish(_ a: inout Assembly, port: UInt32, into outputs: inout [Output]) {
        defer { a = Assembly() }
        if a.skipping { return }
        guard let type = VDAgentMessageType(rawValue: a.type) else {
            outputs.append(.dropped(.unknownType(a.type)))
            return
        }
        outputs.append(.message(VDAgentPort(rawValue: port)!, type, a.payload))
    }
}

/// Frames messages for the stream.
public enum VDAgentWriter {
    /// The 20-byte message header and payload.
    public static func message(_ type: VDAgentMessageType, _ payload: [UInt8]) -> [UInt8] {
        message(rawType: type.rawValue, payload)
    }

    /// The same for a type spice does not define (our HostNotice).
    public static func message(rawType: UInt32, _ payload: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(VDAgent.messageHeaderSize + payload.count)
        out.appendLE(VDAgent.protocolVersion)
        out.appendLE(rawType)
        out += [UInt8](repeating: 0, count: 8)
        out.appendLE(UInt32(payload.count))
        out += payload  // into the reserved storage: one copy of the payload, not two
        return out
    }

    /// Chunks for one message. Towards the guest, `maxChunk` is 2048 (the header
    /// counts against the first chunk); the guest agent may write one chunk of any size.
    public static func chunks(_ message: [UInt8], port: VDAgentPort, maxChunk: Int = Int(UInt32.max)) -> [UInt8] {
        var out: [UInt8] = []
        var offset = 0
        repeat {
            let n = min(maxChunk, message.count - offset)
            out.appendLE(port.rawValue)
            out.appendLE(UInt32(n))
            out += message[offset..<offset + n]
            offset += n
        } while offset < message.count
        return out
    }
}
