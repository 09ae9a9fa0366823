/// PC XT (scancode set 1) bytes, as spice-server's keyboard interface
/// delivers them one at a time (spice.md §5.1), turned into Linux input key
/// codes (linux/input-event-codes.h) for virtio-input.
///
/// The clients send the codes of the Linux "xtkbd" mapping (spice-gtk maps
/// its hardware keys through keycodemapdb's XT KBD column), so the tables
/// below are that mapping inverted: a plain byte, or 0xe0 then a byte. On
/// top: 0xe1 0x1d 0x45 (Pause, as keyboards and spice-gtk send it), 0xe0
/// 0x37 (PrintScreen from clients that send real-keyboard codes), and the
/// fake shifts real keyboards wrap around some keys (0xe0 0x2a, 0xe0 0x36),
/// which are dropped.
public struct PCScancodeDecoder: Sendable {
    public struct KeyEvent: Sendable, Equatable {
        /// Linux KEY_* code.
        public var code: UInt16
        public var pressed: Bool
        public init(code: UInt16, pressed: Bool) {
            self.code = code
            self.pressed = pressed
        }
    }

    private enum Prefix { case none, e0, e1First, e1Second, e2 }
    private var prefix = Prefix.none
    /// Bytes that named no key (for logs and tests).
    public private(set) var unknown = 0

    public init() {}

    public static let keyPause: UInt16 = 119
    public static let keySysRq: UInt16 = 99

    /// Feeds one byte; returns the key it completes, if any.
    public mutating func feed(_ byte: UInt8) -> KeyEvent? {
        let released = byte & 0x80 != 0
        let code = byte & 0x7F
        switch prefix {
        case .none:
            switch byte {
            case 0xE0: prefix = .e0; return nil
            case 0xE1: prefix = .e1First; return nil
            case 0xE2: prefix = .e2; return nil
            case 0x00, 0xFF: unknown += 1; return nil  // keyboard error/overrun codes
            default:
                guard let key = Self.plain[Int(code)] else { unknown += 1; return nil }
                return KeyEvent(code: key, pressed: !released)
            }
        case .e0:
            prefix = .none
            if code == 0x2A || code == 0x36 { return nil }  // fake shifts
            guard let key = Self.extended[Int(code)] else { unknown += 1; return nil }
            return KeyEvent(code: key, pressed: !released)
        case .e1First:
            // Pause: e1 1d 45 (press), e1 9d c5 (release).
            prefix = code == 0x1D ? .e1Second : .none
            if code != 0x1D { unknown += 1 }
            return nil
        case .e1Second:
            prefix = .none
            guard code == 0x45 else { unknown += 1; return nil }
            return KeyEvent(code: Self.keyPause, pressed: !released)
        case .e2:
            // No key uses the 0xe2 prefix in set 1 (logitech extensions): skip its byte.
            prefix = .none
            unknown += 1
            return nil
        }
    }

    /// Linux key code by plain set-1 code (0x01-0x7f).
    static let plain: [UInt16?] = table([
        // 0x01-0x53 are the Linux codes themselves: KEY_ESC (1) .. KEY_KPDOT (83).
        (0x54, 99),   // KEY_SYSRQ (Alt+PrintScreen; spice-gtk's PrintScreen)
        (0x55, 186),  // KEY_F16
        (0x56, 86),   // KEY_102ND
        (0x57, 87),   // KEY_F11
        (0x58, 88),   // KEY_F12
        (0x59, 117),  // KEY_KPEQUAL
        (0x5A, 190),  // KEY_F20
        (0x5B, 101),  // KEY_LINEFEED
        (0x5C, 95),   // KEY_KPJPCOMMA
        (0x5D, 183),  // KEY_F13
        (0x5E, 184),  // KEY_F14
        (0x5F, 185),  // KEY_F15
        (0x63, 169),  // KEY_PHONE
        (0x64, 134),  // KEY_OPEN
        (0x65, 135),  // KEY_PASTE
        (0x66, 141),  // KEY_SETUP
        (0x67, 144),  // KEY_FILE
        (0x68, 145),  // KEY_SENDFILE
        (0x69, 146),  // KEY_DELETEFILE
        (0x6A, 151),  // KEY_MSDOS
        (0x6B, 153),  // KEY_DIRECTION
        (0x6C, 161),  // KEY_EJECTCD
        (0x6D, 193),  // KEY_F23
        (0x6F, 194),  // KEY_F24
        (0x70, 93),   // KEY_KATAKANAHIRAGANA
        (0x71, 174),  // KEY_EXIT
        (0x72, 175),  // KEY_MOVE
        (0x73, 89),   // KEY_RO
        (0x74, 191),  // KEY_F21
        (0x75, 177),  // KEY_SCROLLUP
        (0x76, 85),   // KEY_ZENKAKUHANKAKU
        (0x77, 91),   // KEY_HIRAGANA
        (0x78, 90),   // KEY_KATAKANA
        (0x79, 92),   // KEY_HENKAN
        (0x7B, 94),   // KEY_MUHENKAN
        (0x7D, 124),  // KEY_YEN
        (0x7E, 121),  // KEY_KPCOMMA
    ], identityUpTo: 0x53)

    /// Linux key code by set-1 code after 0xe0.
    static let extended: [UInt16?] = table([
        (0x01, 171),  // KEY_CONFIG
        (0x02, 150),  // KEY_WWW
        (0x03, 187),  // KEY_F17
        (0x04, 189),  // KEY_F19
        (0x05, 129),  // KEY_AGAIN
        (0x06, 130),  // KEY_PROPS
        (0x07, 131),  // KEY_UNDO
        (0x08, 176),  // KEY_EDIT
        (0x09, 181),  // KEY_NEW
        (0x0A, 182),  // KEY_REDO
        (0x0B, 120),  // KEY_SCALE
        (0x0C, 132),  // KEY_FRONT
        (0x0D, 123),  // KEY_HANJA
        (0x0E, 233),  // KEY_FORWARDMAIL
        (0x0F, 178),  // KEY_SCROLLDOWN
        (0x10, 165),  // KEY_PREVIOUSSONG
        (0x12, 152),  // KEY_SCREENLOCK
        (0x13, 147),  // KEY_XFER
        (0x14, 222),  // KEY_ALTERASE
        (0x17, 149),  // KEY_PROG2
        (0x18, 168),  // KEY_REWIND
        (0x19, 163),  // KEY_NEXTSONG
        (0x1C, 96),   // KEY_KPENTER
        (0x1D, 97),   // KEY_RIGHTCTRL
        (0x1E, 139),  // KEY_MENU
        (0x1F, 148),  // KEY_PROG1
        (0x20, 113),  // KEY_MUTE
        (0x21, 140),  // KEY_CALC
        (0x22, 164),  // KEY_PLAYPAUSE
        (0x23, 160),  // KEY_CLOSECD
        (0x24, 166),  // KEY_STOPCD
        (0x25, 205),  // KEY_SUSPEND
        (0x26, 154),  // KEY_CYCLEWINDOWS
        (0x28, 200),  // KEY_PLAYCD
        (0x29, 201),  // KEY_PAUSECD
        (0x2B, 202),  // KEY_PROG3
        (0x2C, 203),  // KEY_PROG4
        (0x2D, 204),  // KEY_DASHBOARD
        (0x2E, 114),  // KEY_VOLUMEDOWN
        (0x2F, 206),  // KEY_CLOSE
        (0x30, 115),  // KEY_VOLUMEUP
        (0x31, 167),  // KEY_RECORD
        (0x32, 172),  // KEY_HOMEPAGE
        (0x33, 207),  // KEY_PLAY
        (0x34, 208),  // KEY_FASTFORWARD
        (0x35, 98),   // KEY_KPSLASH
        (0x37, 99),   // KEY_SYSRQ (PrintScreen as keyboards send it)
        (0x38, 100),  // KEY_RIGHTALT
        (0x39, 210),  // KEY_PRINT
        (0x3A, 211),  // KEY_HP
        (0x3B, 212),  // KEY_CAMERA
        (0x3C, 137),  // KEY_CUT
        (0x3D, 213),  // KEY_SOUND
        (0x3E, 214),  // KEY_QUESTION
        (0x3F, 215),  // KEY_EMAIL
        (0x40, 216),  // KEY_CHAT
        (0x41, 136),  // KEY_FIND
        (0x42, 218),  // KEY_CONNECT
        (0x43, 219),  // KEY_FINANCE
        (0x44, 220),  // KEY_SPORT
        (0x45, 221),  // KEY_SHOP
        (0x46, 119),  // KEY_PAUSE (Ctrl+Break)
        (0x47, 102),  // KEY_HOME
        (0x48, 103),  // KEY_UP
        (0x49, 104),  // KEY_PAGEUP
        (0x4A, 223),  // KEY_CANCEL
        (0x4B, 105),  // KEY_LEFT
        (0x4C, 224),  // KEY_BRIGHTNESSDOWN
        (0x4D, 106),  // KEY_RIGHT
        (0x4E, 118),  // KEY_KPPLUSMINUS
        (0x4F, 107),  // KEY_END
        (0x50, 108),  // KEY_DOWN
        (0x51, 109),  // KEY_PAGEDOWN
        (0x52, 110),  // KEY_INSERT
        (0x53, 111),  // KEY_DELETE
        (0x54, 225),  // KEY_BRIGHTNESSUP
        (0x55, 234),  // KEY_SAVE
        (0x56, 227),  // KEY_SWITCHVIDEOMODE
        (0x57, 228),  // KEY_KBDILLUMTOGGLE
        (0x58, 229),  // KEY_KBDILLUMDOWN
        (0x59, 230),  // KEY_KBDILLUMUP
        (0x5A, 231),  // KEY_SEND
        (0x5B, 125),  // KEY_LEFTMETA
        (0x5C, 126),  // KEY_RIGHTMETA
        (0x5D, 127),  // KEY_COMPOSE (the menu key)
        (0x5E, 116),  // KEY_POWER
        (0x5F, 142),  // KEY_SLEEP
        (0x63, 143),  // KEY_WAKEUP
        (0x64, 232),  // KEY_REPLY
        (0x65, 217),  // KEY_SEARCH
        (0x66, 156),  // KEY_BOOKMARKS
        (0x67, 173),  // KEY_REFRESH
        (0x68, 128),  // KEY_STOP
        (0x69, 159),  // KEY_FORWARD
        (0x6A, 158),  // KEY_BACK
        (0x6B, 157),  // KEY_COMPUTER
        (0x6C, 155),  // KEY_MAIL
        (0x6D, 226),  // KEY_MEDIA
        (0x6F, 112),  // KEY_MACRO
        (0x70, 235),  // KEY_DOCUMENTS
        (0x71, 236),  // KEY_BATTERY
        (0x72, 237),  // KEY_BLUETOOTH
        (0x73, 238),  // KEY_WLAN
        (0x74, 239),  // KEY_UWB
        (0x75, 138),  // KEY_HELP
        (0x76, 179),  // KEY_KPLEFTPAREN
        (0x77, 188),  // KEY_F18
        (0x78, 133),  // KEY_COPY
        (0x79, 192),  // KEY_F22
        (0x7B, 180),  // KEY_KPRIGHTPAREN
        (0x7D, 162),  // KEY_EJECTCLOSECD
    ], identityUpTo: 0)

    private static func table(_ pairs: [(Int, UInt16)], identityUpTo last: Int) -> [UInt16?] {
        var t = [UInt16?](repeating: nil, count: 128)
        if last > 0 { for c in 1...last { t[c] = UInt16(c) } }
        for (scancode, key) in pairs { t[scancode] = key }
        return t
    }
}
