/// One command as a guest agent receives it: `{"execute": NAME, "arguments": {...}, "id": ANY}`.
/// Envelope checks follow QEMU's `qmp_dispatch_check_obj` (protocols.md §1.2).
public struct QGARequest: Sendable, Equatable {
    public var execute: String
    public var arguments: JSONObject
    public var id: JSONValue?

    public init(execute: String, arguments: JSONObject = [:], id: JSONValue? = nil) {
        self.execute = execute
        self.arguments = arguments
        self.id = id
    }

    /// Validates the envelope. On failure the `id` (when one could be read) is
    /// returned with the error, because the reply must still echo it.
    public static func decode(_ value: JSONValue) -> Result<QGARequest, QGARequestError> {
        guard case .object(let obj) = value else {
            return .failure(QGARequestError(error: .generic("QMP input must be a JSON object"), id: nil))
        }
        let id = obj["id"]
        func fail(_ desc: String) -> Result<QGARequest, QGARequestError> {
            .failure(QGARequestError(error: .generic(desc), id: id))
        }
        var execute: String?
        var arguments = JSONObject()
        for m in obj.members {
            let (key, member) = (m.key, m.value)
            switch key {
            case "execute":
                guard case .string(let s) = member else { return fail("QMP input member 'execute' must be a string") }
                execute = s
            case "arguments":
                guard case .object(let a) = member else {
                    return fail("QMP input member 'arguments' must be an object")
                }
                arguments = a
            case "id":
                break
            case "exec-oob":
                return fail("QMP input member 'exec-oob' is unexpected")
            default:
                return fail("QMP input member '\(key)' is unexpected")
            }
        }
        guard let execute else { return fail("QMP input lacks member 'execute'") }
        return .success(QGARequest(execute: execute, arguments: arguments, id: id))
    }

    /// The request as one line of JSON (no newline), as a host client sends it.
    public func encode() -> [UInt8] {
        var obj: JSONObject = ["execute": .string(execute)]
        if !arguments.isEmpty { obj["arguments"] = .object(arguments) }
        if let id { obj["id"] = id }
        return JSONWriter.encode(.object(obj))
    }
}

public struct QGARequestError: Error, Sendable, Equatable {
    public var error: QGAError
    public var id: JSONValue?
}
