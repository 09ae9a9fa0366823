import Foundation
import LinuxSystem

/// A person's disk image for a VM (issue #14): `--disk PATH`, repeatable, each a
/// virtio-blk disk (/dev/vda, /dev/vdb, ... in order). The format is read from
/// the file (qcow2's magic, else raw), never guessed by QEMU. Writes go to the
/// file itself unless `--snapshot`, which gives every disk a throwaway qcow2
/// overlay in the state directory.
public struct DiskSetup: Sendable, Equatable {
    public enum Format: String, Sendable { case raw, qcow2 }

    /// Absolute, symlinks resolved: what the lock is keyed by.
    public var path: String
    public var format: Format

    /// Checks the file and reads its format.
    public static func inspect(_ path: String) throws(VMConfigError) -> DiskSetup {
        guard let resolved = realpath(path, nil) else {
            throw .outOfRange("--disk \(path): \(FileIO.errnoText())")
        }
        defer { free(resolved) }
        let absolute = String(cString: resolved)
        var st = stat()
        guard stat(absolute, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG || (st.st_mode & S_IFMT) == S_IFBLK else {
            throw .outOfRange("--disk \(path): not a regular file or block device")
        }
        guard access(absolute, R_OK | W_OK) == 0 else {
            throw .outOfRange("--disk \(path): not readable and writable by this user (\(FileIO.errnoText()))")
        }
        let magic = Array((FileIO.readBytes(absolute, limit: 4) ?? []).prefix(4))
        return DiskSetup(path: absolute, format: magic == [0x51, 0x46, 0x49, 0xFB] ? .qcow2 : .raw)
    }
}

/// What starts the guest when it is not the embedded kernel: `--firmware`.
public enum Firmware: String, Sendable, CaseIterable {
    /// SeaBIOS, QEMU's default: boots the first disk's MBR boot code.
    case bios
    /// Debian's OVMF (package ovmf), with a per-VM copy of its variable store.
    case uefi

    public static let ovmfCode = "/usr/share/OVMF/OVMF_CODE_4M.fd"
    public static let ovmfVarsTemplate = "/usr/share/OVMF/OVMF_VARS_4M.fd"
    public static let ovmfPackage = "ovmf"
}
