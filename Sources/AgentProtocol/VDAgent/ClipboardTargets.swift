/// How the SPICE clipboard types meet X11 selection targets (protocols.md §3.7
/// item 8: spice-vdagent's mapping), and how a large answer is cut for the
/// ICCCM INCR protocol (ICCCM §2.7.2). Pure functions; the X11 backend of
/// guest-agent does the I/O.
public enum ClipboardTargets {
    /// The X targets that carry each type we exchange, the one we prefer first.
    public static func targets(for type: VDAgentClipboardType) -> [String] {
        switch type {
        case .utf8Text: return ["UTF8_STRING", "text/plain;charset=utf-8", "STRING", "TEXT", "text/plain"]
        case .imagePNG: return ["image/png"]
        case .imageBMP: return ["image/bmp", "image/x-bmp", "image/x-MS-bmp", "image/x-win-bitmap"]
        case .imageTIFF: return ["image/tiff"]
        case .imageJPG: return ["image/jpeg"]
        case .none, .fileList: return []
        }
    }

    /// The types the X11 backend carries: text and PNG (as the issue asks).
    public static let supported: [VDAgentClipboardType] = [.utf8Text, .imagePNG]

    /// The clipboard type an X target stands for, among `supported`; nil for
    /// any other target (TARGETS, TIMESTAMP, MULTIPLE, application formats).
    public static func type(forTarget name: String) -> VDAgentClipboardType? {
        supported.first { targets(for: $0).contains(name) }
    }

    /// What an X owner's TARGETS list offers, as SPICE types in our order of
    /// preference, each once; and for each the target to convert to (the
    /// owner's first listed target of our preferred spelling).
    public static func offer(fromTargets names: [String]) -> [(type: VDAgentClipboardType, target: String)] {
        var out: [(type: VDAgentClipboardType, target: String)] = []
        for type in supported {
            if let target = targets(for: type).first(where: { names.contains($0) }) { out.append((type, target)) }
        }
        return out
    }

    /// The TARGETS list we answer while we hold a selection for the client.
    public static func targetsList(offering types: [VDAgentClipboardType]) -> [String] {
        var out = ["TARGETS", "TIMESTAMP"]
        for type in supported where types.contains(type) { out += targets(for: type) }
        return out
    }

    /// The largest property we write in one request, and so the INCR chunk
    /// size: from the server's maximum request length in 4-byte units
    /// (`XExtendedMaxRequestSize`, 0 without BIG-REQUESTS, else
    /// `XMaxRequestSize`), less room for the request header, capped at
    /// `cap` so that one paste never stalls the connection for long.
    public static func chunkSize(maxRequestUnits: Int, extendedMaxRequestUnits: Int, cap: Int = 256 << 10) -> Int {
        let units = extendedMaxRequestUnits > 0 ? extendedMaxRequestUnits : maxRequestUnits
        // ChangeProperty's own fields take 24 bytes (32 with BIG-REQUESTS); keep a margin.
        let bytes = units * 4 - 256
        return max(1024, min(cap, bytes))
    }

    /// The pieces of `total` bytes as INCR sends them: nil when one property
    /// holds it all (no INCR), else the ranges in order; the receiver then
    /// expects one last zero-length property.
    public static func incrChunks(total: Int, chunkSize: Int) -> [Range<Int>]? {
        guard total > chunkSize else { return nil }
        return stride(from: 0, to: total, by: chunkSize).map { $0..<min($0 + chunkSize, total) }
    }
}
