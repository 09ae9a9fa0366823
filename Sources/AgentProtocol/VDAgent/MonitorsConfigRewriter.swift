/// Rewrites the byte stream spice-server sends towards the guest so a real
/// spice-vdagentd accepts MONITORS_CONFIG (protocols.md §0 finding 6):
/// spice-gtk always sets VD_AGENT_CONFIG_MONITORS_FLAG_PHYSICAL_SIZE and
/// appends one VDAgentMonitorMM per monitor, and spice-vdagentd 0.22.1 rejects
/// any size but the one without them. We strip the trailer and clear the flag.
///
/// Decided: always, whatever agent the guest runs. Our own agent accepts both
/// sizes and has no use for the millimetres; detecting which agent is there is
/// not possible from its capabilities.
///
/// Only a message that starts and ends inside one chunk is rewritten, which
/// every realistic one does (16 monitors are 404 bytes; chunks towards the
/// guest carry up to 2048). Everything else passes through unchanged, byte
/// for byte, so the filter cannot desynchronise the stream.
public struct MonitorsConfigRewriter: Sendable {
    /// Chunks larger than this stream through without being held back.
    public static let maxHeldChunk = 64 << 10

    private var pending: [UInt8] = []
    /// Payload bytes of the current chunk still to pass through unexamined.
    private var passThrough = 0
    /// Bytes of the message in progress on each port, still to come in later chunks.
    private var messageRemaining: [UInt32: Int] = [:]

    public init() {}

    /// How many messages were rewritten (for logs and tests).
    public private(set) var rewritten = 0

    /// Feeds bytes from the server; returns bytes for the guest (possibly fewer
    /// or more than given: a header is held until its chunk is complete).
    public mutating func feed(_ bytes: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var input = bytes[...]
        while !input.isEmpty {
            if passThrough > 0 {
                let n = min(passThrough, input.count)
                out += input.prefix(n)
                input = input.dropFirst(n)
                passThrough -= n
                continue
            }
            pending += input
            input = []
            guard pending.count >= VDAgent.chunkHeaderSize else { break }
            let header = LEReader(pending[...])
            let port = header.u32(0)!
            let size = Int(header.u32(4)!)
            let startsMessage = (messageRemaining[port] ?? 0) == 0
            if !startsMessage || size > Self.maxHeldChunk {
                // Not a message start, or too big to hold: stream it through,
                // once a message start has shown its header.
                if startsMessage && pending.count < VDAgent.chunkHeaderSize + VDAgent.messageHeaderSize { break }
                let remaining = messageRemaining[port] ?? 0
                messageRemaining[port] = startsMessage ? messageBodyLeft(in: pending, chunkSize: size) : max(0, remaining - size)
                out += pending.prefix(VDAgent.chunkHeaderSize)
                input = pending.dropFirst(VDAgent.chunkHeaderSize)
                pending = []
                passThrough = size
                continue
            }
            guard pending.count >= VDAgent.chunkHeaderSize + size else { break }
            let chunk = Array(pending.prefix(VDAgent.chunkHeaderSize + size))
            input = pending.dropFirst(VDAgent.chunkHeaderSize + size)
            pending = []
            messageRemaining[port] = messageBodyLeft(in: chunk, chunkSize: size)
            out += rewrite(chunk, port: port)
        }
        return out
    }

    /// For a chunk that starts a message: how much of the message follows in later chunks.
    private func messageBodyLeft(in chunk: [UInt8], chunkSize: Int) -> Int {
        let h = LEReader(chunk[VDAgent.chunkHeaderSize...])
        // A chunk too short to hold the message header is malformed; the agent
        // drops it. Assume nothing follows so the next chunk is examined afresh.
        guard chunkSize >= VDAgent.messageHeaderSize, let messageSize = h.u32(16) else { return 0 }
        return max(0, Int(messageSize) - (chunkSize - VDAgent.messageHeaderSize))
    }

    private mutating func rewrite(_ chunk: [UInt8], port: UInt32) -> [UInt8] {
        let c = VDAgent.chunkHeaderSize
        let m = c + VDAgent.messageHeaderSize
        let r = LEReader(chunk[...])
        guard chunk.count >= m + 8,
              r.u32(c) == VDAgent.protocolVersion,
              r.u32(c + 4) == VDAgentMessageType.monitorsConfig.rawValue,
              let messageSize = r.u32(c + 16), Int(messageSize) == chunk.count - m,
              let count = r.u32(m), let flags = r.u32(m + 4),
              flags & VDAgentMonitorsConfig.physicalSize != 0,
              count <= 256
        else { return chunk }
        let withoutMM = 8 + Int(count) * 20
        // Only the exact spice-gtk layout is rewritten; anything else is the agent's to judge.
        guard Int(messageSize) == withoutMM + Int(count) * 4 else { return chunk }
        var out = chunk.prefix(m + withoutMM).map { $0 }
        out.replaceLE(at: 4, UInt32(VDAgent.messageHeaderSize + withoutMM))
        out.replaceLE(at: c + 16, UInt32(withoutMM))
        out.replaceLE(at: m + 4, flags & ~VDAgentMonitorsConfig.physicalSize)
        rewritten += 1
        return out
    }
}

extension Array where Element == UInt8 {
    mutating func replaceLE(at offset: Int, _ v: UInt32) {
        for i in 0..<4 { self[offset + i] = UInt8(truncatingIfNeeded: v >> (8 * i)) }
    }
}
