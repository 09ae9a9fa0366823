import Foundation
import LinuxSystem

/// "One VM at a time" for things on the host (a USB device, a disk image): an
/// flock'd file per thing under the state root, holding the VM's name, for as
/// long as that VM has it. The kernel drops the lock when hostvmm exits, however
/// it exits; another VM's attempt names the holder.
struct HostClaim {
    enum Kind: String { case usb, disk }

    let path: String
    let fd: Int32

    static func directory(_ kind: Kind) -> String { "\(StateDirectory.root())/.claims/\(kind.rawValue)" }

    /// A file name for `key` (a BUS-ADDR, an absolute path): '%' and '/' escaped.
    static func path(_ kind: Kind, _ key: String) -> String {
        let name = key.replacingOccurrences(of: "%", with: "%25").replacingOccurrences(of: "/", with: "%2F")
        return "\(directory(kind))/\(name)"
    }

    /// Claims `key` for `vm`; `what` names it in the error when another VM has it.
    static func take(_ kind: Kind, _ key: String, what: String, for vm: String) throws(VMConfigError) -> HostClaim {
        try? FileManager.default.createDirectory(atPath: directory(kind), withIntermediateDirectories: true,
                                                 attributes: [.posixPermissions: 0o700])
        let path = path(kind, key)
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw .outOfRange("cannot create \(path): \(FileIO.errnoText())") }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            close(fd)
            throw .outOfRange("\(what) is in use by VM '\(holder(kind, key) ?? "?")'")
        }
        _ = ftruncate(fd, 0)
        let name = Array(vm.utf8)
        _ = name.withUnsafeBufferPointer { pwrite(fd, $0.baseAddress, $0.count, 0) }
        return HostClaim(path: path, fd: fd)
    }

    /// The VM holding `key`, if one does (its lock is held).
    static func holder(_ kind: Kind, _ key: String) -> String? {
        let fd = open(path(kind, key), O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        if flock(fd, LOCK_SH | LOCK_NB) == 0 {
            flock(fd, LOCK_UN)
            return nil
        }
        return FileIO.readText(path(kind, key))?.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func release() {
        unlink(path)
        close(fd)
    }
}
