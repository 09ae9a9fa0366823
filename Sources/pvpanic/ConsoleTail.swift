/// The end of a serial console log and the line that says why the kernel died.
public enum ConsoleTail {
    public static let defaultBytes = 64 << 10

    /// The last `bytes` of `log`, starting at a line boundary when one is near.
    public static func tail(_ log: [UInt8], bytes: Int = defaultBytes) -> [UInt8] {
        guard log.count > bytes else { return log }
        let start = log.count - bytes
        if let nl = log[start...].prefix(512).firstIndex(of: 0x0A) { return Array(log[(nl + 1)...]) }
        return Array(log[start...])
    }

    /// The first panic line ("Kernel panic - not syncing: ..."), without the
    /// kernel's timestamp; else the first Oops/BUG line; nil if there is none.
    public static func summary(_ text: String) -> String? {
        // The serial console writes CRLF, which Swift reads as one Character: split on any newline.
        let lines = text.split(whereSeparator: \.isNewline).map(stripTimestamp)
        for marker in ["Kernel panic", "Oops:", "BUG:", "general protection fault"] {
            if let line = lines.first(where: { $0.contains(marker) }) { return line }
        }
        return nil
    }

    /// "[   12.345678] text" -> "text"; also drops a trailing carriage return.
    static func stripTimestamp(_ line: Substring) -> String {
        var s = line
        if s.last == "\r" { s = s.dropLast() }
        if s.first == "[", let close = s.firstIndex(of: "]") {
            s = s[s.index(after: close)...].drop { $0 == " " }
        }
        return String(s)
    }
}
