/// A minimal EDID 1.4 base block (VESA E-EDID) for one virtual monitor whose
/// preferred (and native) mode is `width` x `height` at 60 Hz: header, vendor
/// "HVM", digital 8-bit input, sRGB, one detailed timing with CVT reduced-
/// blanking-like margins, a monitor name, range limits. No extensions.
///
/// The common modes smaller than the preferred one are listed too (established
/// and standard timings). They matter when a client's window grows: the guest's
/// fbdev console cannot grow its framebuffer, so its re-probe keeps only modes
/// that fit the one it has; with the preferred mode alone it would find none and
/// switch the screen off. A compositor still sees the new preferred mode.
public enum VirtioGPUEDID {
    /// Established timings I and II (bytes 35-36): 640x480, 800x600, 1024x768 at 60 Hz.
    static let established: [(width: Int, height: Int, byte: Int, bit: UInt8)] = [
        (640, 480, 35, 0x20), (800, 600, 35, 0x01), (1024, 768, 36, 0x08),
    ]
    /// Standard timings offered, largest first; the aspect code is EDID 1.4's
    /// (0 = 16:10, 1 = 4:3, 2 = 5:4, 3 = 16:9).
    static let standard: [(width: Int, height: Int, aspect: UInt8)] = [
        (1920, 1200, 0), (1920, 1080, 3), (1680, 1050, 0), (1600, 900, 3), (1440, 900, 0),
        (1280, 1024, 2), (1280, 960, 1), (1280, 800, 0), (1280, 720, 3), (1152, 864, 1),
    ]

    /// The smaller modes the block lists besides the preferred one: established, then standard (8 slots).
    static func smallerModes(width: Int, height: Int)
        -> (established: ArraySlice<(width: Int, height: Int, byte: Int, bit: UInt8)>,
            standard: ArraySlice<(width: Int, height: Int, aspect: UInt8)>)
    {
        func fits(_ w: Int, _ h: Int) -> Bool { w <= width && h <= height && !(w == width && h == height) }
        return (established.filter { fits($0.width, $0.height) }[...],
                standard.filter { fits($0.width, $0.height) }.prefix(8))
    }

    public static func block(width: Int, height: Int, name: String = "hostvmm") -> [UInt8] {
        var e = [UInt8](repeating: 0, count: 128)
        e.replaceSubrange(0..<8, with: [0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x00])
        // Manufacturer "HVM": three 5-bit letters ('A' = 1), big-endian.
        let id = (UInt16(8) << 10) | (UInt16(22) << 5) | UInt16(13)
        e[8] = UInt8(id >> 8)
        e[9] = UInt8(id & 0xff)
        e[10] = 0x01  // product code 1, serial 0
        e[17] = 36  // model year 2026 (1990 + 36)
        e[18] = 1  // EDID 1.4
        e[19] = 4
        e[20] = 0xA5  // digital, 8 bits per colour, DisplayPort
        // Size at 96 dpi, in cm.
        let widthMM = width * 254 / 960, heightMM = height * 254 / 960
        e[21] = UInt8(min(255, max(1, widthMM / 10)))
        e[22] = UInt8(min(255, max(1, heightMM / 10)))
        e[23] = 120  // gamma 2.2
        e[24] = 0x06  // RGB 4:4:4, sRGB default, preferred timing is native
        // sRGB chromaticity coordinates.
        e.replaceSubrange(25..<35, with: [0xEE, 0x91, 0xA3, 0x54, 0x4C, 0x99, 0x26, 0x0F, 0x50, 0x54])
        let (establishedModes, standardModes) = smallerModes(width: width, height: height)
        for mode in establishedModes { e[mode.byte] |= mode.bit }
        for (slot, i) in stride(from: 38, to: 54, by: 2).enumerated() {
            guard slot < standardModes.count else {
                e[i] = 0x01  // unused
                e[i + 1] = 0x01
                continue
            }
            let mode = standardModes[standardModes.startIndex + slot]
            e[i] = UInt8(mode.width / 8 - 31)
            e[i + 1] = mode.aspect << 6  // refresh 60 Hz: 60 - 60 in the low six bits
        }
        var at = 54
        if let dtd = detailedTiming(width: width, height: height, widthMM: widthMM, heightMM: heightMM) {
            e.replaceSubrange(at..<(at + 18), with: dtd)
            at += 18
        }
        // Monitor name: up to 13 bytes, ended by LF, padded with spaces.
        var text = Array(name.utf8.prefix(13))
        if text.count < 13 { text += [0x0A] + [UInt8](repeating: 0x20, count: 12 - text.count) }
        e.replaceSubrange(at..<(at + 18), with: [0, 0, 0, 0xFC, 0] + text)
        at += 18
        // Range limits: 24-75 Hz vertical, 1-255 kHz horizontal, 2550 MHz clock, no formula.
        e.replaceSubrange(at..<(at + 18), with: [0, 0, 0, 0xFD, 0, 24, 75, 1, 255, 255, 0x01, 0x0A]
                              + [UInt8](repeating: 0x20, count: 6))
        at += 18
        while at < 126 {  // dummy descriptors
            e.replaceSubrange(at..<(at + 18), with: [0, 0, 0, 0x10] + [UInt8](repeating: 0, count: 14))
            at += 18
        }
        e[126] = 0  // no extensions
        let sum = e[0..<127].reduce(0) { ($0 + Int($1)) & 0xff }
        e[127] = UInt8((256 - sum) & 0xff)
        return e
    }

    /// An 18-byte detailed timing descriptor at 60 Hz, or nil if the mode does not
    /// fit one (12-bit sizes, 16-bit clock in 10 kHz units).
    static func detailedTiming(width: Int, height: Int, widthMM: Int, heightMM: Int) -> [UInt8]? {
        let hBlank = 160, hFront = 48, hSync = 32
        let vFront = 3, vSync = 6
        let vBlank = max(23, (height * 460 + 16_000) / 16_000)  // >= 460 us of blanking at 60 Hz, roughly
        let clock = (width + hBlank) * (height + vBlank) * 60 / 10_000
        guard width > 0, height > 0, width < 4096, height < 4096, clock <= 0xFFFF else { return nil }
        var d = [UInt8](repeating: 0, count: 18)
        d[0] = UInt8(clock & 0xff)
        d[1] = UInt8(clock >> 8)
        d[2] = UInt8(width & 0xff)
        d[3] = UInt8(hBlank & 0xff)
        d[4] = UInt8((width >> 8) << 4 | (hBlank >> 8))
        d[5] = UInt8(height & 0xff)
        d[6] = UInt8(vBlank & 0xff)
        d[7] = UInt8((height >> 8) << 4 | (vBlank >> 8))
        d[8] = UInt8(hFront & 0xff)
        d[9] = UInt8(hSync & 0xff)
        d[10] = UInt8((vFront & 0xf) << 4 | (vSync & 0xf))
        d[11] = UInt8((hFront >> 8) << 6 | (hSync >> 8) << 4 | (vFront >> 4) << 2 | (vSync >> 4))
        let wmm = min(widthMM, 4095), hmm = min(heightMM, 4095)
        d[12] = UInt8(wmm & 0xff)
        d[13] = UInt8(hmm & 0xff)
        d[14] = UInt8((wmm >> 8) << 4 | (hmm >> 8))
        d[17] = 0x1E  // digital separate sync, +hsync +vsync
        return d
    }
}
