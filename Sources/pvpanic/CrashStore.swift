import AgentProtocol
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Crash bundles in a VM's state directory: `crashes/<time>-<kind>/` holding
/// `event.json`, `console.txt` (the console's last 64 KiB), `registers.txt`
/// (every vCPU), `vmcore` (QEMU's dump-guest-memory) and `summary.txt` (the
/// first panic line). The newest `keep` bundles are kept; a bundle with a
/// `preserved` marker is never pruned. Files are 0600, directories 0700.
///
/// A bundle is written in a hidden staging directory (`.NAME.partial`) and
/// renamed to its name only when its event.json is written, so a capture cut
/// short (a full disk, hostvmm killed) never leaves something that lists as a
/// bundle; `list` skips staging directories.
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

    /// Creates a new, empty bundle in its staging directory, named by time and kind;
    /// returns the staging path (write into it, then `commit`).
    public func create(kind: String, at date: Date = Date()) throws -> String {
        let fm = FileManager.default
        try fm.createDirectory(atPath: root, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyyMMdd'T'HHmmss'Z'"
        var name = "\(formatter.string(from: date))-\(kind)"
        var n = 2
        while fm.fileExists(atPath: "\(root)/\(name)") || fm.fileExists(atPath: Self.staging(root, name)) {
            name = "\(formatter.string(from: date))-\(kind)-\(n)"
            n += 1
        }
        let path = Self.staging(root, name)
        try fm.createDirectory(atPath: path, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        return path
    }

    private static func staging(_ root: String, _ name: String) -> String { "\(root)/.\(name).partial" }

    /// Gives a staged bundle its name; returns the bundle's path.
    public func commit(_ staged: String) throws -> String {
        let name = (staged as NSString).lastPathComponent
        guard name.hasPrefix("."), name.hasSuffix(".partial") else { return staged }
        let final = "\(root)/\(name.dropFirst().dropLast(".partial".count))"
        guard rename(staged, final) == 0 else { throw CrashStoreError(path: final, errno: errno) }
        return final
    }

    /// Removes a staged bundle that could not be finished.
    public func discard(_ staged: String) {
        try? FileManager.default.removeItem(atPath: staged)
    }

    /// Writes one file of a bundle, owner-only. The error says why (ENOSPC: "No space left on device").
    public func write(_ bytes: [UInt8], to bundle: String, file: String) throws {
        let path = "\(bundle)/\(file)"
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw CrashStoreError(path: path, errno: errno) }
        var written = 0
        while written < bytes.count {
            let n = bytes[written...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                let code = n < 0 ? errno : ENOSPC
                close(fd)
                unlink(path)  // nothing half-written stays behind
                throw CrashStoreError(path: path, errno: code)
            }
            written += n
        }
        guard close(fd) == 0 else {
            let code = errno
            unlink(path)
            throw CrashStoreError(path: path, errno: code)
        }
    }

    public func write(_ text: String, to bundle: String, file: String) throws {
        try write(Array(text.utf8), to: bundle, file: file)
    }

    public func markPreserved(_ bundle: String) throws {
        try write("kept by --on-panic preserve\n", to: bundle, file: "preserved")
    }

    /// Bundles, oldest first (not the ones still being written).
    public func list() -> [Bundle] {
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []).filter { !$0.hasPrefix(".") }.sorted()
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

/// A bundle file that could not be written, in the system's words.
public struct CrashStoreError: Error, CustomStringConvertible {
    public var path: String
    public var errno: Int32
    public var description: String { "\(path): \(String(cString: strerror(errno)))" }
}
