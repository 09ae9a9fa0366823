/// Linux input event codes (include/uapi/linux/input-event-codes.h) that the
/// virtio-input devices use. virtio-input carries exactly these (virtio spec §5.8).
public enum LinuxInput {
    public static let evSyn: UInt16 = 0x00
    public static let evKey: UInt16 = 0x01
    public static let evRel: UInt16 = 0x02
    public static let evAbs: UInt16 = 0x03
    public static let evLED: UInt16 = 0x11
    public static let evRep: UInt16 = 0x14

    public static let synReport: UInt16 = 0

    public static let relX: UInt16 = 0x00
    public static let relY: UInt16 = 0x01
    public static let relHWheel: UInt16 = 0x06
    public static let relWheel: UInt16 = 0x08
    public static let absX: UInt16 = 0x00
    public static let absY: UInt16 = 0x01

    public static let btnLeft: UInt16 = 0x110
    public static let btnRight: UInt16 = 0x111
    public static let btnMiddle: UInt16 = 0x112

    public static let ledNumLock: UInt16 = 0
    public static let ledCapsLock: UInt16 = 1
    public static let ledScrollLock: UInt16 = 2

    /// KEY_ESC (1) ... KEY_MICMUTE and friends: the keyboard range below the buttons (BTN_MISC = 0x100).
    public static let keyboardKeys: ClosedRange<UInt16> = 1...0xff
}

/// One virtio_input_event (§5.8.6): type, code, value; little-endian, 8 bytes.
public struct InputEvent: Equatable, Sendable, CustomStringConvertible {
    public var type: UInt16
    public var code: UInt16
    public var value: UInt32

    public init(type: UInt16, code: UInt16, value: UInt32) {
        self.type = type
        self.code = code
        self.value = value
    }

    public static let size = 8
    public static let synReport = InputEvent(type: LinuxInput.evSyn, code: LinuxInput.synReport, value: 0)

    public var encoded: [UInt8] {
        [UInt8(truncatingIfNeeded: type), UInt8(truncatingIfNeeded: type >> 8),
         UInt8(truncatingIfNeeded: code), UInt8(truncatingIfNeeded: code >> 8)]
            + (0..<4).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) }
    }

    public init?(decoding b: ArraySlice<UInt8>) {
        guard b.count >= Self.size else { return nil }
        let s = b.startIndex
        type = UInt16(b[s]) | UInt16(b[s + 1]) << 8
        code = UInt16(b[s + 2]) | UInt16(b[s + 3]) << 8
        value = (0..<4).reduce(UInt32(0)) { $0 | UInt32(b[s + 4 + $1]) << (8 * UInt32($1)) }
    }

    public var description: String { "(\(type),\(code),\(Int32(bitPattern: value)))" }
}
