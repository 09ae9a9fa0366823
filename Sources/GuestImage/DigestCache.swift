import Foundation
import Glibc

/// SHA-256 sums of the image's inputs, remembered by path, size, mtime and inode, so
/// that every `hostvmm up` does not read the 100 MB kernel package and the agent again
/// to find its cached image (issue #17: 0.35 s of each launch). A file that changed in
/// any of those is summed again with sha256sum.
struct DigestCache {
    let path: String

    /// One line per file: SUM SIZE MTIME_NS INODE PATH.
    private func load() -> [String: (identity: String, sum: String)] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return [:] }
        var entries: [String: (String, String)] = [:]
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ", maxSplits: 4).map(String.init)
            guard fields.count == 5 else { continue }
            entries[fields[4]] = (fields[1...3].joined(separator: " "), fields[0])
        }
        return entries
    }

    static func identity(_ file: String) -> String? {
        var st = stat()
        guard stat(file, &st) == 0 else { return nil }
        return "\(st.st_size) \(Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec)) \(st.st_ino)"
    }

    /// The sums of `files`, in order.
    func sums(_ files: [String]) throws(ImageBuildError) -> [String] {
        var known = load()
        let stale = files.filter { f in known[f] == nil || known[f]?.identity != Self.identity(f) }
        if !stale.isEmpty {
            let sha = try HostTool.sha256sum.locate()
            let lines = try runTool([sha] + stale).split(separator: "\n")
            guard lines.count == stale.count else { throw .commandFailed("sha256sum gave \(lines.count) sums for \(stale.count) files") }
            for (file, line) in zip(stale, lines) {
                guard let identity = Self.identity(file) else { continue }
                known[file] = (identity, line.split(separator: " ").first.map(String.init) ?? "")
            }
            let text = known.filter { !$0.key.contains("\n") }
                .map { "\($0.value.sum) \($0.value.identity) \($0.key)" }.sorted().joined(separator: "\n") + "\n"
            try? text.write(toFile: path, atomically: true, encoding: .utf8)
        }
        return files.map { known[$0]?.sum ?? "" }
    }
}
