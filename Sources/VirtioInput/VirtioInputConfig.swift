/// virtio-input config space (virtio spec §5.8.4): the driver writes `select`
/// and `subsel`, then reads `size` and the union. 136 bytes:
/// select u8, subsel u8, size u8, reserved[5], union[128].
public struct VirtioInputConfig: Sendable {
    public static let size = 136
    static let unionOffset = 8
    static let unionSize = 128

    /// VIRTIO_INPUT_CFG_* values of `select`.
    public enum Select: UInt8 {
        case unset = 0x00
        case idName = 0x01
        case idSerial = 0x02
        case idDevids = 0x03
        case propBits = 0x10
        case evBits = 0x11
        case absInfo = 0x12
    }

    public struct AbsInfo: Sendable {
        public var min: UInt32, max: UInt32, fuzz: UInt32 = 0, flat: UInt32 = 0, res: UInt32 = 0
    }

    public var name: String
    public var serial: String
    public var bustype: UInt16 = 0x06  // BUS_VIRTUAL
    public var vendor: UInt16
    public var product: UInt16
    public var version: UInt16 = 1
    /// Event type -> codes the device can send (EV_BITS).
    public var eventCodes: [UInt16: [UInt16]]
    /// Axis -> range (ABS_INFO).
    public var absInfo: [UInt16: AbsInfo] = [:]

    /// The union's bytes for a selection; empty means "not supported" (size 0).
    public func payload(select: UInt8, subsel: UInt8) -> [UInt8] {
        switch Select(rawValue: select) {
        case .idName?: return Array(name.utf8.prefix(Self.unionSize))
        case .idSerial?: return Array(serial.utf8.prefix(Self.unionSize))
        case .idDevids?:
            var w: [UInt8] = []
            for v in [bustype, vendor, product, version] { w += [UInt8(v & 0xff), UInt8(v >> 8)] }
            return w
        case .propBits?:
            return []
        case .evBits?:
            guard let codes = eventCodes[UInt16(subsel)], !codes.isEmpty else { return [] }
            var bitmap = [UInt8](repeating: 0, count: Self.unionSize)
            for c in codes where Int(c) < Self.unionSize * 8 { bitmap[Int(c) / 8] |= 1 << (c % 8) }
            while bitmap.last == 0 { bitmap.removeLast() }
            return bitmap
        case .absInfo?:
            guard let a = absInfo[UInt16(subsel)] else { return [] }
            return [a.min, a.max, a.fuzz, a.flat, a.res].flatMap { v in (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
        case .unset?, nil:
            return []
        }
    }

    /// The whole config space for the current selection.
    public func bytes(select: UInt8, subsel: UInt8) -> [UInt8] {
        var c = [UInt8](repeating: 0, count: Self.size)
        c[0] = select
        c[1] = subsel
        let data = payload(select: select, subsel: subsel)
        c[2] = UInt8(data.count)
        c.replaceSubrange(Self.unionOffset..<(Self.unionOffset + data.count), with: data)
        return c
    }
}
