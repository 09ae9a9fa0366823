#if canImport(Glibc)
import Glibc
#endif

/// Whole-file and directory helpers without Foundation (the guest agent reads
/// /proc and /sys a lot, and writes small state files).
public enum FileIO {
    /// The file's bytes, or nil if it cannot be read. Reads until EOF, so
    /// /proc and /sys files (which report size 0) work.
    public static func readBytes(_ path: String, limit: Int = 64 << 20) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16384)
        while out.count < limit {
            let n = chunk.withUnsafeMutableBytes { raw in Syscall.retrying { read(fd, raw.baseAddress, raw.count) } }
            if n < 0 { return nil }
            if n == 0 { break }
            out += chunk[0..<n]
        }
        return out
    }

    public static func readText(_ path: String) -> String? {
        readBytes(path).map { String(decoding: $0, as: UTF8.self) }
    }

    /// The first line without its newline; nil if unreadable.
    public static func readLine(_ path: String) -> String? {
        readText(path).map { String($0.prefix { $0 != "\n" }) }
    }

    /// Entry names in a directory, without "." and "..", sorted.
    public static func list(_ path: String) -> [String] {
        guard let dir = opendir(path) else { return [] }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    public static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

    public static func isDirectory(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    /// Writes `bytes` to `path` (created with `mode`), replacing it atomically via a temporary file.
    public static func writeAtomically(_ path: String, _ bytes: [UInt8], mode: mode_t = 0o600,
                                       owner: (uid: uid_t, gid: gid_t)? = nil, durable: Bool = false) throws(SystemError) {
        let temporary = "\(path).tmp-\(getpid())"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
        guard fd >= 0 else { throw SystemError("open", temporary) }
        // fchmod: the mode asked for, whatever the umask; the owner before the content is visible.
        var ok = fchmod(fd, mode) == 0 && Syscall.writeAll(fd: fd, bytes)
        if ok, let owner { ok = fchown(fd, owner.uid, owner.gid) == 0 }
        if ok, durable { ok = fsync(fd) == 0 }
        let failure = errno
        close(fd)
        guard ok else {
            unlink(temporary)
            throw SystemError("write", temporary, errno: failure == 0 ? EIO : failure)
        }
        guard rename(temporary, path) == 0 else {
            let e = SystemError("rename", path)
            unlink(temporary)
            throw e
        }
        if durable {
            // The rename itself survives a crash only once the directory is on disk.
            let slash = path.lastIndex(of: "/")
            let directory = slash.map { $0 == path.startIndex ? "/" : String(path[..<$0]) } ?? "."
            let dirFD = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            if dirFD >= 0 { fsync(dirFD); close(dirFD) }
        }
    }

    /// Writes a string to an existing file such as a sysfs attribute.
    public static func writeString(_ path: String, _ text: String) throws(SystemError) {
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SystemError("open", path) }
        defer { close(fd) }
        let bytes = Array(text.utf8)
        let n = bytes.withUnsafeBytes { raw in Syscall.retrying { write(fd, raw.baseAddress, raw.count) } }
        guard n == bytes.count else { throw SystemError("write", path) }
    }

    public static func errnoText(_ code: Int32 = errno) -> String { String(cString: strerror(code)) }
}
