import TestSupport
import Foundation

/// An Xvfb on a display number it picks itself (-displayfd), optionally with
/// its screen readable as an XWD file (-fbdir), for tests that look at what an
/// X client shows.
final class Xvfb {
    static let path = "/usr/bin/Xvfb"
    let process: WatchedProcess
    let display: String
    private let fbdir: String?

    /// `screen` as Xvfb takes it (WIDTHxHEIGHTxDEPTH); `fbdir`: where Xvfb keeps Xvfb_screen0.
    init(screen: String = "640x480x24", fbdir: String? = nil) throws {
        self.fbdir = fbdir
        var arguments = ["-displayfd", "1", "-nolisten", "tcp", "-screen", "0", screen]
        if let fbdir { arguments += ["-fbdir", fbdir] }
        process = try WatchedProcess(Self.path, arguments)
        // Xvfb writes the number once it accepts connections.
        let reported = process.waitForLine(timeout: 20) { Int($0.trimmingCharacters(in: .whitespaces)) != nil }
        guard let number = reported.flatMap({ Int($0.trimmingCharacters(in: .whitespaces)) }) else {
            process.signal(SIGTERM)
            throw TestFailure("Xvfb did not report a display within 20 s: \(process.transcript)")
        }
        display = ":\(number)"
        guard FileManager.default.fileExists(atPath: "/tmp/.X11-unix/X\(number)") else {
            process.signal(SIGTERM)
            throw TestFailure("Xvfb reported display \(display) but /tmp/.X11-unix/X\(number) is missing")
        }
    }

    func stop() {
        process.signal(SIGTERM)
        _ = process.waitForExit(timeout: 10)
    }

    /// The screen now, as 0xRRGGBB per pixel (needs `fbdir`; 24-bit depth, 32 bits
    /// per pixel, as Xvfb lays it out). XWD: a big-endian header of 25 32-bit fields
    /// and the window name, 12 bytes per colormap entry, then the rows.
    func screen() throws -> (width: Int, height: Int, pixels: [UInt32]) {
        guard let fbdir else { throw TestFailure("this Xvfb has no -fbdir") }
        let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: "\(fbdir)/Xvfb_screen0")))
        guard bytes.count >= 100 else { throw TestFailure("XWD file of \(bytes.count) bytes") }
        func field(_ i: Int) -> Int { (0..<4).reduce(0) { $0 << 8 | Int(bytes[4 * i + $1]) } }
        let (headerSize, width, height, bitsPerPixel, bytesPerLine, colors) =
            (field(0), field(4), field(5), field(11), field(12), field(19))
        let start = headerSize + 12 * colors
        guard bitsPerPixel == 32, field(7) == 0 /* LSBFirst */, start + height * bytesPerLine <= bytes.count else {
            throw TestFailure("unexpected XWD layout: \(bitsPerPixel) bpp, byte order \(field(7)), \(bytes.count) bytes")
        }
        var pixels = [UInt32](repeating: 0, count: width * height)
        for y in 0..<height {
            let row = start + y * bytesPerLine
            for x in 0..<width {
                let p = row + 4 * x
                pixels[y * width + x] = UInt32(bytes[p + 2]) << 16 | UInt32(bytes[p + 1]) << 8 | UInt32(bytes[p])
            }
        }
        return (width, height, pixels)
    }
}
