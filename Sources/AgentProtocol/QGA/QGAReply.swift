/// A reply line from a guest agent. Encoding follows qemu-ga exactly (protocols.md
/// §0 finding 2): one JSON object, no whitespace, LF; a `guest-sync-delimited`
/// reply is preceded by the single byte 0xFF.
public enum QGAReply: Sendable, Equatable {
    case success(JSONValue, id: JSONValue?)
    case failure(QGAError, id: JSONValue?)

    /// The byte a sync-delimited reply starts with, and that a host sends to make
    /// the agent drop a half-read request.
    public static let delimiter: UInt8 = 0xFF

    public func encode(delimited: Bool = false) -> [UInt8] {
        var obj = JSONObject()
        switch self {
        case .success(let value, let id):
            obj["return"] = value
            if let id { obj["id"] = id }
        case .failure(let error, let id):
            obj["error"] = error.json
            if let id { obj["id"] = id }
        }
        var out: [UInt8] = delimited ? [QGAReply.delimiter] : []
        JSONWriter.write(.object(obj), into: &out)
        out.append(0x0A)
        return out
    }

    /// Reads a reply line as a host client receives it.
    public static func decode(_ value: JSONValue) -> QGAReply? {
        guard case .object(let obj) = value else { return nil }
        let id = obj["id"]
        if let ret = obj["return"] { return .success(ret, id: id) }
        if case .object(let err)? = obj["error"] {
            let cls = err["class"]?.stringValue.map(QGAErrorClass.init(rawValue:)) ?? .genericError
            return .failure(QGAError(cls, err["desc"]?.stringValue ?? ""), id: id)
        }
        return nil
    }
}
