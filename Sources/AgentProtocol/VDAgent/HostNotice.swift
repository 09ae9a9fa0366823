/// Our guest agent's notices to hostvmm (protocol.md §1.9), carried on the
/// SPICE agent port because QGA has no unsolicited messages (a host parsing
/// qemu-ga replies, Proxmox for one, must never see an extra line).
///
/// A notice is a VDAgent message on the server port (2) with a private type
/// and a JSON object as payload. spice-server discards whatever an agent
/// writes to the server port; hostvmm's bridge takes ours out before that
/// (HostNoticeTap), so no SPICE peer ever sees one.
public enum HostNotice {
    /// "hvmN" read as a little-endian u32: far from spice's types (1...16).
    public static let messageType: UInt32 = 0x4E4D_5648
    /// A notice is a small JSON object; anything larger is not one of ours.
    public static let maxPayload = 64 << 10

    /// The bytes the guest agent writes: one chunk on the server port.
    public static func encode(json: [UInt8]) -> [UInt8] {
        var message: [UInt8] = []
        message.appendLE(VDAgent.protocolVersion)
        message.appendLE(messageType)
        message += [UInt8](repeating: 0, count: 8)
        message.appendLE(UInt32(json.count))
        return VDAgentWriter.chunks(message + json, port: .server)
    }
}

/// Splits the guest's byte stream: notices come out, everything else passes
/// through unchanged in order. Client-port chunks stream through without
/// being held; server-port chunks are held whole (they are small) to look at.
public struct HostNoticeTap: Sendable {
    public struct Output: Sendable, Equatable {
        public var passThrough: [UInt8] = []
        public var notices: [[UInt8]] = []
    }

    private var pending: [UInt8] = []
    private var streaming = 0

    public init() {}

    public mutating func feed(_ bytes: [UInt8]) -> Output {
        var out = Output()
        var input = bytes[...]
        while !input.isEmpty {
            if streaming > 0 {
                let n = min(streaming, input.count)
                out.passThrough += input.prefix(n)
                input = input.dropFirst(n)
                streaming -= n
                continue
            }
            pending += input
            input = []
            guard pending.count >= VDAgent.chunkHeaderSize else { break }
            let r = LEReader(pending[...])
            let port = r.u32(0)!
            let size = Int(r.u32(4)!)
            if port != VDAgentPort.server.rawValue || size > HostNotice.maxPayload + VDAgent.messageHeaderSize {
                out.passThrough += pending.prefix(VDAgent.chunkHeaderSize)
                input = pending.dropFirst(VDAgent.chunkHeaderSize)
                pending = []
                streaming = size
                continue
            }
            guard pending.count >= VDAgent.chunkHeaderSize + size else { break }
            let chunk = Array(pending.prefix(VDAgent.chunkHeaderSize + size))
            input = pending.dropFirst(VDAgent.chunkHeaderSize + size)
            pending = []
            let m = LEReader(chunk[VDAgent.chunkHeaderSize...])
            if size >= VDAgent.messageHeaderSize, m.u32(0) == VDAgent.protocolVersion,
               m.u32(4) == HostNotice.messageType, m.u32(16) == UInt32(size - VDAgent.messageHeaderSize)
            {
                out.notices.append(Array(chunk[(VDAgent.chunkHeaderSize + VDAgent.messageHeaderSize)...]))
            } else {
                out.passThrough += chunk
            }
        }
        return out
    }
}
