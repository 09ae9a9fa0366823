import Foundation

/// A test's own failure with a message a person can act on.
public struct TestFailure: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}

/// Polls `condition` every `interval` until it holds or `timeout` passes; returns
/// whether it held. For state with no event to wait on (a file in the guest, a
/// process's memory): each caller says why it polls.
@discardableResult
public func waitUntil(timeout: TimeInterval, interval: TimeInterval = 0.05, _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    while true {
        if try condition() { return true }
        if Date() >= deadline { return false }
        Thread.sleep(forTimeInterval: min(interval, max(0, deadline.timeIntervalSinceNow)))
    }
}

/// A fresh private directory under the system's temporary directory.
public func temporaryTestDirectory(_ label: String) throws -> String {
    let dir = "\(NSTemporaryDirectory())/hostvmm-\(label)-\(getpid())-\(UUID().uuidString.prefix(8))"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true,
                                            attributes: [.posixPermissions: 0o700])
    return dir
}
