/// vhost-user wire format (QEMU docs/interop/vhost-user.rst, "Message Specification").
/// All numbers are in the machine's byte order; we run on little-endian x86-64
/// and aarch64 only, so fields are decoded as little-endian explicitly.

/// Front-end requests we know by name ("Front-end message types").
public enum VhostUserRequest: UInt32, Sendable {
    case getFeatures = 1
    case setFeatures = 2
    case setOwner = 3
    case resetOwner = 4
    case setMemTable = 5
    case setLogBase = 6
    case setLogFD = 7
    case setVringNum = 8
    case setVringAddr = 9
    case setVringBase = 10
    case getVringBase = 11
    case setVringKick = 12
    case setVringCall = 13
    case setVringErr = 14
    case getProtocolFeatures = 15
    case setProtocolFeatures = 16
    case getQueueNum = 17
    case setVringEnable = 18
    case getConfig = 24
    case setConfig = 25
    case resetDevice = 34
    case getMaxMemSlots = 36
    case setStatus = 39
    case getStatus = 40
}

/// VHOST_USER_PROTOCOL_F_* bits ("Protocol features").
public enum VhostUserProtocolFeature {
    public static let multiQueue: UInt64 = 1 << 0
    public static let replyAck: UInt64 = 1 << 3
    public static let config: UInt64 = 1 << 9
    public static let resetDevice: UInt64 = 1 << 13
}

public enum VhostUserError: Error, Equatable, Sendable, CustomStringConvertible {
    /// Header syntax: wrong version bits, or a payload over `VhostUserHeader.maxPayload`.
    case badHeader(request: UInt32, flags: UInt32, size: UInt32)
    /// A payload too short for its request, or with an invalid field.
    case badPayload(request: UInt32, reason: String)
    case wrongFDCount(request: UInt32, expected: Int, got: Int)
    case ancillaryTruncated
    case badQueueIndex(request: UInt32, index: UInt32)
    /// A state the front-end must not ask for (features it was not offered, ...).
    case protocolViolation(String)

    public var description: String {
        switch self {
        case .badHeader(let r, let f, let s): return "bad header: request \(r) flags 0x\(String(f, radix: 16)) size \(s)"
        case .badPayload(let r, let why): return "request \(r): \(why)"
        case .wrongFDCount(let r, let e, let g): return "request \(r): expected \(e) file descriptors, got \(g)"
        case .ancillaryTruncated: return "file descriptors were truncated"
        case .badQueueIndex(let r, let i): return "request \(r): no queue \(i)"
        case .protocolViolation(let why): return why
        }
    }
}

/// The 12-byte header: request, flags, payload size.
public struct VhostUserHeader: Equatable, Sendable {
    public static let size = 12
    /// Messages are small: the memory table is the largest (8 + 8 * 32 bytes); a
    /// config access at most 12 + 256. Anything bigger is refused before reading it.
    public static let maxPayload: UInt32 = 4096
    public static let version: UInt32 = 0x1
    public static let versionMask: UInt32 = 0x3
    public static let replyFlag: UInt32 = 1 << 2
    public static let needReplyFlag: UInt32 = 1 << 3

    public var request: UInt32
    public var flags: UInt32
    public var size: UInt32

    public init(request: UInt32, flags: UInt32, size: UInt32) {
        self.request = request
        self.flags = flags
        self.size = size
    }

    public var needsReply: Bool { flags & Self.needReplyFlag != 0 }

    /// Syntax only (as rust-vmm's `is_valid`): version 1, payload within the cap.
    public static func decode(_ b: [UInt8]) throws(VhostUserError) -> VhostUserHeader {
        guard b.count >= size else { throw .badHeader(request: 0, flags: 0, size: 0) }
        var r = MessageReader(b)
        let h = VhostUserHeader(request: r.u32(), flags: r.u32(), size: r.u32())
        guard h.flags & versionMask == version, h.size <= maxPayload else {
            throw .badHeader(request: h.request, flags: h.flags, size: h.size)
        }
        return h
    }

    public func encoded() -> [UInt8] {
        var w = MessageWriter()
        w.u32(request)
        w.u32(flags)
        w.u32(size)
        return w.bytes
    }

    /// A reply to `request` carrying `payload`.
    public static func reply(to request: UInt32, payload: [UInt8]) -> [UInt8] {
        VhostUserHeader(request: request, flags: version | replyFlag, size: UInt32(payload.count)).encoded() + payload
    }
}

/// Payloads ("Payload").
public enum VhostUserPayload {
    public struct VringState: Equatable, Sendable {
        public var index: UInt32
        public var num: UInt32
    }

    public struct VringAddress: Equatable, Sendable {
        public var index: UInt32
        public var flags: UInt32
        public var descriptor: UInt64
        public var used: UInt64
        public var available: UInt64
        public var log: UInt64
    }

    public struct ConfigAccess: Equatable, Sendable {
        public static let maxSize: UInt32 = 256
        public var offset: UInt32
        public var size: UInt32
        public var flags: UInt32
        public var payload: [UInt8]
    }

    public static func u64(_ request: UInt32, _ p: [UInt8]) throws(VhostUserError) -> UInt64 {
        guard p.count >= 8 else { throw .badPayload(request: request, reason: "u64 payload of \(p.count) bytes") }
        var r = MessageReader(p)
        return r.u64()
    }

    public static func vringState(_ request: UInt32, _ p: [UInt8]) throws(VhostUserError) -> VringState {
        guard p.count >= 8 else { throw .badPayload(request: request, reason: "vring state of \(p.count) bytes") }
        var r = MessageReader(p)
        return VringState(index: r.u32(), num: r.u32())
    }

    public static func vringAddress(_ request: UInt32, _ p: [UInt8]) throws(VhostUserError) -> VringAddress {
        guard p.count >= 40 else { throw .badPayload(request: request, reason: "vring address of \(p.count) bytes") }
        var r = MessageReader(p)
        return VringAddress(index: r.u32(), flags: r.u32(), descriptor: r.u64(), used: r.u64(), available: r.u64(),
                            log: r.u64())
    }

    /// "Multiple Memory regions description": count, padding, then count regions.
    public static func memoryTable(_ request: UInt32, _ p: [UInt8]) throws(VhostUserError) -> [MemoryRegionSpec] {
        guard p.count >= 8 else { throw .badPayload(request: request, reason: "memory table of \(p.count) bytes") }
        var r = MessageReader(p)
        let count = Int(r.u32())
        _ = r.u32()
        guard count >= 1, count <= GuestMemory.maxRegions else {
            throw .badPayload(request: request, reason: "\(count) memory regions")
        }
        guard p.count >= 8 + 32 * count else {
            throw .badPayload(request: request, reason: "\(count) regions in \(p.count) bytes")
        }
        return (0..<count).map { _ in
            MemoryRegionSpec(guestAddress: r.u64(), size: r.u64(), userAddress: r.u64(), mmapOffset: r.u64())
        }
    }

    public static func config(_ request: UInt32, _ p: [UInt8], withData: Bool) throws(VhostUserError) -> ConfigAccess {
        guard p.count >= 12 else { throw .badPayload(request: request, reason: "config access of \(p.count) bytes") }
        var r = MessageReader(p)
        let offset = r.u32(), size = r.u32(), flags = r.u32()
        guard size <= ConfigAccess.maxSize else { throw .badPayload(request: request, reason: "config size \(size)") }
        guard !withData || p.count >= 12 + Int(size) else {
            throw .badPayload(request: request, reason: "config data shorter than \(size)")
        }
        return ConfigAccess(offset: offset, size: size, flags: flags,
                            payload: withData ? Array(p[12..<(12 + Int(size))]) : [])
    }

    public static func encode(_ s: VringState) -> [UInt8] {
        var w = MessageWriter()
        w.u32(s.index)
        w.u32(s.num)
        return w.bytes
    }

    public static func encode(_ value: UInt64) -> [UInt8] {
        var w = MessageWriter()
        w.u64(value)
        return w.bytes
    }

    public static func encode(_ c: ConfigAccess) -> [UInt8] {
        var w = MessageWriter()
        w.u32(c.offset)
        w.u32(c.size)
        w.u32(c.flags)
        return w.bytes + c.payload
    }

    public static func encode(_ a: VringAddress) -> [UInt8] {
        var w = MessageWriter()
        w.u32(a.index)
        w.u32(a.flags)
        w.u64(a.descriptor)
        w.u64(a.used)
        w.u64(a.available)
        w.u64(a.log)
        return w.bytes
    }

    public static func encode(memoryTable regions: [MemoryRegionSpec]) -> [UInt8] {
        var w = MessageWriter()
        w.u32(UInt32(regions.count))
        w.u32(0)
        for r in regions {
            w.u64(r.guestAddress)
            w.u64(r.size)
            w.u64(r.userAddress)
            w.u64(r.mmapOffset)
        }
        return w.bytes
    }
}

/// Little-endian field reader over a byte array whose length the caller checked.
struct MessageReader {
    private let bytes: [UInt8]
    private var offset = 0
    init(_ bytes: [UInt8]) { self.bytes = bytes }

    private mutating func integer<T: FixedWidthInteger>(_: T.Type) -> T {
        var v: T = 0
        for k in 0..<MemoryLayout<T>.size { v |= T(bytes[offset + k]) << (8 * k) }
        offset += MemoryLayout<T>.size
        return v
    }

    mutating func u32() -> UInt32 { integer(UInt32.self) }
    mutating func u64() -> UInt64 { integer(UInt64.self) }
}

struct MessageWriter {
    var bytes: [UInt8] = []
    mutating func u32(_ v: UInt32) { for k in 0..<4 { bytes.append(UInt8(truncatingIfNeeded: v >> (8 * k))) } }
    mutating func u64(_ v: UInt64) { for k in 0..<8 { bytes.append(UInt8(truncatingIfNeeded: v >> (8 * k))) } }
}
