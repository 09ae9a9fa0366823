#if canImport(Glibc)
import Glibc
#endif

/// Finds a virtio-serial port by name without udev: the kernel publishes each
/// port's name in /sys/class/virtio-ports/vportNpM/name (protocols.md §4).
enum VirtioPorts {
    static let linkDirectory = "/dev/virtio-ports/"

    /// `/dev/virtio-ports/NAME` if it exists, else the `/dev/vportNpM` whose
    /// sysfs name is NAME, else the path unchanged.
    static func resolve(_ path: String) -> String {
        guard access(path, F_OK) != 0, path.hasPrefix(linkDirectory) else { return path }
        let wanted = String(path.dropFirst(linkDirectory.count))
        guard let dir = opendir("/sys/class/virtio-ports") else { return path }
        defer { closedir(dir) }
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            guard name.hasPrefix("vport") else { continue }
            if readFirstLine("/sys/class/virtio-ports/\(name)/name") == wanted { return "/dev/\(name)" }
        }
        return path
    }

    private static func readFirstLine(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 256)
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard n > 0 else { return nil }
        return String(decoding: buffer[0..<n].prefix { $0 != 0x0A && $0 != 0 }, as: UTF8.self)
    }
}
