/// Reads a command's `arguments` with qemu-ga's validation rules and messages
/// (missing, wrong type, unexpected). Call `finish()` after reading every
/// parameter so that unknown ones are refused, as QAPI's visitor does.
public struct QGAArguments: Sendable {
    private let object: JSONObject
    private var consumed: Set<String> = []

    public init(_ object: JSONObject) { self.object = object }

    public mutating func optionalInt(_ name: String) throws(QGAError) -> Int64? {
        consumed.insert(name)
        guard let v = object[name] else { return nil }
        guard let i = v.int64Value else { throw .invalidParameterType(name, expected: "integer") }
        return i
    }

    public mutating func int(_ name: String) throws(QGAError) -> Int64 {
        guard let i = try optionalInt(name) else { throw .missingParameter(name) }
        return i
    }

    public mutating func optionalString(_ name: String) throws(QGAError) -> String? {
        consumed.insert(name)
        guard let v = object[name] else { return nil }
        guard case .string(let s) = v else { throw .invalidParameterType(name, expected: "string") }
        return s
    }

    public mutating func string(_ name: String) throws(QGAError) -> String {
        guard let s = try optionalString(name) else { throw .missingParameter(name) }
        return s
    }

    public mutating func optionalBool(_ name: String) throws(QGAError) -> Bool? {
        consumed.insert(name)
        guard let v = object[name] else { return nil }
        guard case .bool(let b) = v else { throw .invalidParameterType(name, expected: "boolean") }
        return b
    }

    /// Refuses any member that no read asked for.
    public func finish() throws(QGAError) {
        if let extra = object.keys.first(where: { !consumed.contains($0) }) {
            throw .unexpectedParameter(extra)
        }
    }
}
