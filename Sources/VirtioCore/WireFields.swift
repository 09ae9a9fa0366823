/// Little-endian fields of device requests and responses (virtio is little-endian
/// throughout), shared by the device modules. The caller checks lengths first.
public struct WireReader {
    public let bytes: [UInt8]
    public init(bytes: [UInt8]) { self.bytes = bytes }

    public func u32(_ at: Int) -> UInt32 {
        UInt32(bytes[at]) | UInt32(bytes[at + 1]) << 8 | UInt32(bytes[at + 2]) << 16 | UInt32(bytes[at + 3]) << 24
    }

    public func u64(_ at: Int) -> UInt64 { UInt64(u32(at)) | UInt64(u32(at + 4)) << 32 }
}

extension Array where Element == UInt8 {
    public mutating func putU32(_ v: UInt32, at: Int) {
        for k in 0..<4 { self[at + k] = UInt8(truncatingIfNeeded: v >> (8 * UInt32(k))) }
    }

    public mutating func putU64(_ v: UInt64, at: Int) {
        for k in 0..<8 { self[at + k] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(k))) }
    }

    /// Appends `v` in little-endian byte order.
    public mutating func appendLE<T: FixedWidthInteger>(_ v: T) {
        Swift.withUnsafeBytes(of: v.littleEndian) { append(contentsOf: $0) }
    }
}
