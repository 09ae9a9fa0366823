/// QAPI error classes (protocols.md §1.2). qemu-ga sends only the two named here;
/// a reply from another agent may carry any class, so the type stays open.
public struct QGAErrorClass: RawRepresentable, Sendable, Hashable {
    public var rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }

    public static let genericError = QGAErrorClass(rawValue: "GenericError")
    public static let commandNotFound = QGAErrorClass(rawValue: "CommandNotFound")
}

/// An error reply: `{"error":{"class":...,"desc":...}}`.
public struct QGAError: Error, Sendable, Equatable, CustomStringConvertible {
    public var errorClass: QGAErrorClass
    public var desc: String

    public init(_ errorClass: QGAErrorClass = .genericError, _ desc: String) {
        self.errorClass = errorClass
        self.desc = desc
    }

    public static func generic(_ desc: String) -> QGAError { QGAError(.genericError, desc) }

    public var description: String { "\(errorClass.rawValue): \(desc)" }

    public var json: JSONValue {
        .object(["class": .string(errorClass.rawValue), "desc": .string(desc)])
    }

    // The texts qemu-ga's QAPI layer produces for argument validation.
    public static func missingParameter(_ name: String) -> QGAError {
        .generic("Parameter '\(name)' is missing")
    }

    public static func unexpectedParameter(_ name: String) -> QGAError {
        .generic("Parameter '\(name)' is unexpected")
    }

    public static func invalidParameterType(_ name: String, expected: String) -> QGAError {
        .generic("Invalid parameter type for '\(name)', expected: \(expected)")
    }

    public static func invalidParameter(_ name: String) -> QGAError {
        .generic("Invalid parameter '\(name)'")
    }

    public static func commandNotFound(_ name: String) -> QGAError {
        QGAError(.commandNotFound, "The command \(name) has not been found")
    }

    public static func commandDisabled(_ name: String, reason: String? = nil) -> QGAError {
        QGAError(.commandNotFound, "Command \(name) has been disabled" + (reason.map { ": \($0)" } ?? ""))
    }
}
