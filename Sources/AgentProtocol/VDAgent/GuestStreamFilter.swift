/// The guest's byte stream on its way to spice-server, which trusts it more
/// than it should: a chunk for an unknown port, or a message start with the
/// wrong protocol, makes spice-server drop the agent altogether ("invalid
/// port", AGENT_MSG_FILTER_PROTO_ERROR), which leaves clipboard dead until the
/// guest reopens the port. So the bridge passes on only what spice-server
/// handles, and takes our agent's notices out:
///
/// - client port (1): a chunk that starts a message must hold a whole message
///   header with protocol 1 and no more than that one message (spice-server
///   reads one message per chunk), and clipboard messages must be long enough
///   for what spice-gtk reads of them; chunks continuing a message stream through
///   without being held; a read wholly inside such a chunk passes without a copy.
/// - server port (2): our notices come out; other chunks pass (spice-server
///   discards them itself).
/// - any other port: dropped.
///
/// Dropped chunks are counted; the stream stays in sync because framing is
/// by chunk header.
public struct GuestStreamFilter: Sendable {
    public struct Output: Sendable, Equatable {
        public var passThrough: [UInt8] = []
        public var notices: [[UInt8]] = []
        /// Why chunks were dropped, for the log.
        public var dropped: [String] = []
    }

    private var pending: [UInt8] = []
    /// Payload bytes of the current chunk still to pass (`streamingDrops`: to drop).
    private var streaming = 0
    private var streamingDrops = false
    /// Bytes of the current client-port message still to come in later chunks.
    private var clientMessageLeft = 0

    public init() {}

    /// Payload sizes below which spice-gtk (0.42) misreads a message from the
    /// agent: it subtracts the selection prefix and type without checking, so
    /// a 2-byte CLIPBOARD_GRAB crashed the client in our hostile-guest test.
    /// Sizes assume the selection prefix, which every current agent sends.
    static let minimumPayload: [UInt32: Int] = [
        VDAgentMessageType.announceCapabilities.rawValue: 8,
        VDAgentMessageType.reply.rawValue: 8,
        VDAgentMessageType.clipboard.rawValue: 8,
        VDAgentMessageType.clipboardGrab.rawValue: 4,
        VDAgentMessageType.clipboardRequest.rawValue: 8,
        VDAgentMessageType.clipboardRelease.rawValue: 1,
    ]

    public mutating func feed(_ bytes: [UInt8]) -> Output {
        var out = Output()
        // A large transfer's usual read: all of it inside a chunk already judged. No copy.
        if pending.isEmpty && streaming >= bytes.count {
            streaming -= bytes.count
            if !streamingDrops { out.passThrough = bytes }
            return out
        }
        // Parsed by index; only the unparsed tail (less than a header, or a notice
        // still arriving) is kept for the next read.
        let buffer = pending.isEmpty ? bytes : pending + bytes
        var at = 0
        let c = VDAgent.chunkHeaderSize
        while at < buffer.count {
            if streaming > 0 {
                let n = min(streaming, buffer.count - at)
                if !streamingDrops { out.passThrough += buffer[at..<(at + n)] }
                at += n
                streaming -= n
                continue
            }
            guard buffer.count - at >= c else { break }
            let r = LEReader(buffer[at...])
            let port = r.u32(0)!
            let size = Int(r.u32(4)!)
            if port == VDAgentPort.client.rawValue && clientMessageLeft > 0 {
                // spice-server drops the agent for a continuation longer than the message's rest.
                if size > clientMessageLeft {
                    out.dropped.append("a \(size)-byte chunk continuing a message with \(clientMessageLeft) bytes left")
                    stream(size, drop: true, from: buffer, at: &at, into: &out)
                } else {
                    clientMessageLeft -= size
                    stream(size, drop: false, from: buffer, at: &at, into: &out)
                }
            } else if port == VDAgentPort.client.rawValue {
                // A message start: look at its header before passing anything.
                guard buffer.count - at >= c + min(size, VDAgent.messageHeaderSize) else { break }
                let h = LEReader(buffer[(at + c)...])
                if size < VDAgent.messageHeaderSize {
                    out.dropped.append("a \(size)-byte chunk too short for a message header")
                    stream(size, drop: true, from: buffer, at: &at, into: &out)
                } else if h.u32(0) != VDAgent.protocolVersion {
                    out.dropped.append("a message with protocol \(h.u32(0)!)")
                    stream(size, drop: true, from: buffer, at: &at, into: &out)
                } else if Int(h.u32(16)!) < size - VDAgent.messageHeaderSize {
                    out.dropped.append("a chunk holding more than its message")
                    stream(size, drop: true, from: buffer, at: &at, into: &out)
                } else if let minimum = Self.minimumPayload[h.u32(4)!], Int(h.u32(16)!) < minimum {
                    out.dropped.append("a message of type \(h.u32(4)!) with \(h.u32(16)!) payload bytes (needs \(minimum))")
                    stream(size, drop: true, from: buffer, at: &at, into: &out)
                } else {
                    clientMessageLeft = Int(h.u32(16)!) - (size - VDAgent.messageHeaderSize)
                    stream(size, drop: false, from: buffer, at: &at, into: &out)
                }
            } else if port == VDAgentPort.server.rawValue && size <= HostNotice.maxPayload + VDAgent.messageHeaderSize {
                guard buffer.count - at >= c + size else { break }
                let chunk = buffer[at..<(at + c + size)]
                at += c + size
                let m = LEReader(chunk.dropFirst(c))
                if size >= VDAgent.messageHeaderSize, m.u32(0) == VDAgent.protocolVersion,
                   m.u32(4) == HostNotice.messageType, m.u32(16) == UInt32(size - VDAgent.messageHeaderSize)
                {
                    out.notices.append(Array(chunk.dropFirst(c + VDAgent.messageHeaderSize)))
                } else {
                    out.passThrough += chunk
                }
            } else if port == VDAgentPort.server.rawValue {
                stream(size, drop: false, from: buffer, at: &at, into: &out)
            } else {
                out.dropped.append("a chunk for port \(port)")
                stream(size, drop: true, from: buffer, at: &at, into: &out)
            }
        }
        pending = at == 0 ? buffer : Array(buffer[at...])
        return out
    }

    /// From here on the current chunk (header and payload) passes, or is dropped, as it arrives.
    private mutating func stream(_ size: Int, drop: Bool, from buffer: [UInt8], at: inout Int,
                                 into out: inout Output) {
        if !drop { out.passThrough += buffer[at..<(at + VDAgent.chunkHeaderSize)] }
        at += VDAgent.chunkHeaderSize
        streaming = size
        streamingDrops = drop
    }
}
