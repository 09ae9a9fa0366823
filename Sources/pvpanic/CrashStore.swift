import AgentProtocol
import Foundation

/// Crash bundles in a VM's state directory: `crashes/<time>-<kind>/` holding
/// `event.json`, `console.txt` (the console's last 64 KiB), `registers.txt`
/// (every vCPU), `vmcore` (QEMU's dump-guest-memory) and `summary.txt` (the
/// first panic line). The newest `keep` bundles are kept; a bundle with a
/// `preserved` marker is never pruned. Files are 0600, directories 0700.
public struct CrashStore: Sendable {
    public let root: String
    public let keep: Int

    public init(stateDirectory: String, keep: Int = 5) {
        root = "\(stateDirectory)/crashes"
        self.keep = max(1, keep)
    }

    public struct Bundle: Sendable {
        public var path: String
        public var name: String { (path as NSString).lastPathComponent }
        public var event: JSONValue?
        public var summary: String?
    }

    /// Creates a new, empty bundle directory named by time and kind.
    public func create(kind: String, at date: Date = Date()) throws -> String {
        let fm = FileManager.default
        try fm.createDirectory(atPath: root, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyyMMdd'T'HHmmss'Z'"
        var name = "\(formatter.string(from: date))-\(kind)"
        var n = 2
        while fm.fileExists(atPath: "\(root)/\(name)") {
            name = "\(formatter.string(from: date))-\(kind)-\(n)"
            n += 1
        }
        let path = "\(root)/\(name)"
        try fm.createDirectory(atPath: path, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        return path
    }

    /// Writes one file of a bundle, owner-only.
    public func write(_ bytes: [UInt8], to bundle: String, file: String) throws {
        let path = "\(bundle)/\(file)"
        guard FileManager.default.createFile(atPath: path, contents: Data(bytes), attributes: [.posixPermissions: 0o600])
        else { throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: path]) }
    }

    public func write(_ text: String, to bundle: String, file: String) throws {
        try write(Array(text.utf8), to: bundle, file: file)
    }

    public func markPreserved(_ bundle: String) throws {
        try write("kept by --on-panic preserve\n", to: bundle, file: "preserved")
    }

    /// Bundles, oldest first.
    public func list() -> [Bundle] {
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []).sorted()
        return names.map { name in
            let path = "\(root)/\(name)"
            let event = (try? Data(contentsOf: URL(fileURLWithPath: "\(path)/event.json")))
                .flatMap { try? JSONParser.parse(Array($0)) }
            let summary = (try? String(contentsOfFile: "\(path)/summary.txt", encoding: .utf8))?
                .trimmingCharacters(in: .whitespacesAndNewlines)
            return Bundle(path: path, event: event, summary: summary)
        }
    }

    /// Deletes the oldest unpreserved bundles beyond `keep`; returns what it removed.
    @discardableResult
    public func prune() -> [String] {
        let fm = FileManager.default
        let candidates = list().filter { !fm.fileExists(atPath: "\($0.path)/preserved") }
        guard candidates.count > keep else { return [] }
        let doomed = candidates.prefix(candidates.count - keep).map(\.path)
        for path in doomed { try? fm.removeItem(atPath: path) }
        return doomed
    }
}
