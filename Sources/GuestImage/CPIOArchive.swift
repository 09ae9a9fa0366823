import Foundation

/// Writes a newc ("070701") cpio archive, the format the kernel unpacks as an
/// initramfs. Written by us rather than by cpio(1) so that device nodes
/// (/dev/console) can be added without root or mknod.
public struct CPIOArchive {
    public enum Kind {
        case directory
        case file([UInt8])
        case symlink(target: String)
        case characterDevice(major: UInt32, minor: UInt32)
    }

    private(set) public var bytes: [UInt8] = []
    private var nextInode: UInt32 = 1
    private var names = Set<String>()

    public init() {}

    /// Adds an entry. `path` is relative to the archive root ("bin/busybox").
    /// Parent directories must be added first; adding a path twice is a bug.
    public mutating func add(_ path: String, _ kind: Kind, permissions: UInt32 = 0o755) {
        precondition(!path.hasPrefix("/"), "cpio paths are relative: \(path)")
        precondition(names.insert(path).inserted, "duplicate cpio entry \(path)")
        let typeBits: UInt32
        var data: [UInt8] = []
        var rdev: (UInt32, UInt32) = (0, 0)
        var nlink: UInt32 = 1
        switch kind {
        case .directory:
            typeBits = 0o040000
            nlink = 2
        case .file(let content):
            typeBits = 0o100000
            data = content
        case .symlink(let target):
            typeBits = 0o120000
            data = Array(target.utf8)
        case .characterDevice(let major, let minor):
            typeBits = 0o020000
            rdev = (major, minor)
        }
        writeHeader(name: path, mode: typeBits | (permissions & 0o7777), nlink: nlink, size: UInt32(data.count),
                    rdev: rdev)
        bytes += data
        pad()
    }

    /// Closes the archive with the TRAILER!!! entry.
    public mutating func finish() {
        writeHeader(name: "TRAILER!!!", mode: 0, nlink: 1, size: 0, rdev: (0, 0), inode: 0)
    }

    private mutating func writeHeader(name: String, mode: UInt32, nlink: UInt32, size: UInt32,
                                      rdev: (UInt32, UInt32), inode: UInt32? = nil)
    {
        let ino = inode ?? nextInode
        if inode == nil { nextInode += 1 }
        let nameBytes = Array(name.utf8) + [0]
        let fields: [UInt32] = [ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev.0, rdev.1, UInt32(nameBytes.count), 0]
        bytes += Array("070701".utf8)
        for f in fields {
            let hex = String(f, radix: 16)
            bytes += Array((String(repeating: "0", count: 8 - hex.count) + hex).utf8)
        }
        bytes += nameBytes
        pad()
    }

    private mutating func pad() {
        while bytes.count % 4 != 0 { bytes.append(0) }
    }
}
