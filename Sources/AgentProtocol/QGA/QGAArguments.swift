/// Reads a command's `arguments` with qemu-ga's validation rules and messages
/// (missing, wrong type, unexpected, bad enum value). Nested objects are named
/// the way QAPI names them (`vcpus[0].logical-id`). Call `finish()` after
/// reading every parameter so that unknown ones are refused.
public struct QGAArguments: Sendable {
    private let object: JSONObject
    private let prefix: String
    private var consumed: Set<String> = []

    public init(_ object: JSONObject, prefix: String = "") {
        self.object = object
        self.prefix = prefix
    }

    /// An element of an array argument that must itself be an object.
    public static func element(_ value: JSONValue, of array: String, at index: Int) throws(QGAError) -> QGAArguments {
        let name = "\(array)[\(index)]"
        guard case .object(let o) = value else { throw .invalidParameterType(name, expected: "object") }
        return QGAArguments(o, prefix: name + ".")
    }

    private mutating func take(_ name: String) -> JSONValue? {
        consumed.insert(name)
        return object[name]
    }

    private func full(_ name: String) -> String { prefix + name }

    public mutating func optionalInt(_ name: String) throws(QGAError) -> Int64? {
        guard let v = take(name) else { return nil }
        guard let i = v.int64Value else { throw .invalidParameterType(full(name), expected: "integer") }
        return i
    }

    public mutating func int(_ name: String) throws(QGAError) -> Int64 {
        guard let i = try optionalInt(name) else { throw .missingParameter(full(name)) }
        return i
    }

    public mutating func optionalString(_ name: String) throws(QGAError) -> String? {
        guard let v = take(name) else { return nil }
        guard case .string(let s) = v else { throw .invalidParameterType(full(name), expected: "string") }
        return s
    }

    public mutating func string(_ name: String) throws(QGAError) -> String {
        guard let s = try optionalString(name) else { throw .missingParameter(full(name)) }
        return s
    }

    public mutating func optionalBool(_ name: String) throws(QGAError) -> Bool? {
        guard let v = take(name) else { return nil }
        guard case .bool(let b) = v else { throw .invalidParameterType(full(name), expected: "boolean") }
        return b
    }

    public mutating func bool(_ name: String) throws(QGAError) -> Bool {
        guard let b = try optionalBool(name) else { throw .missingParameter(full(name)) }
        return b
    }

    public mutating func optionalArray(_ name: String) throws(QGAError) -> [JSONValue]? {
        guard let v = take(name) else { return nil }
        guard case .array(let a) = v else { throw .invalidParameterType(full(name), expected: "array") }
        return a
    }

    public mutating func array(_ name: String) throws(QGAError) -> [JSONValue] {
        guard let a = try optionalArray(name) else { throw .missingParameter(full(name)) }
        return a
    }

    public mutating func optionalStringArray(_ name: String) throws(QGAError) -> [String]? {
        guard let items = try optionalArray(name) else { return nil }
        var out: [String] = []
        for (i, item) in items.enumerated() {
            guard case .string(let s) = item else { throw .invalidParameterType(full("\(name)[\(i)]"), expected: "string") }
            out.append(s)
        }
        return out
    }

    public mutating func stringArray(_ name: String) throws(QGAError) -> [String] {
        guard let a = try optionalStringArray(name) else { throw .missingParameter(full(name)) }
        return a
    }

    /// A string that must be one of `values` (a QAPI enum).
    public mutating func optionalEnum(_ name: String, _ values: [String]) throws(QGAError) -> String? {
        guard let s = try optionalString(name) else { return nil }
        guard values.contains(s) else { throw .generic("Parameter '\(full(name))' does not accept value '\(s)'") }
        return s
    }

    /// The raw value, for alternates (a member that may be a bool or an enum, an int or a string).
    public mutating func optionalValue(_ name: String) -> JSONValue? { take(name) }

    /// Refuses any member that no read asked for.
    public func finish() throws(QGAError) {
        if let extra = object.keys.first(where: { !consumed.contains($0) }) {
            throw .unexpectedParameter(full(extra))
        }
    }
}
