import CLinuxSupport
import Glibc
import VirtioCore

/// Guest memory for the virtio targets: a memfd mapped twice, once as
/// GuestMemory (what devices see) and once for the harness to write, as a
/// driver would. Two regions with a hole between them, like QEMU's table
/// below and above the PCI hole:
///   region 0: guest 0x0000_0000, 2 MiB      region 1: guest 0x0040_0000, 1 MiB
/// Made once per process: mapping per input would cost more than the parsing.
final class FuzzGuest: @unchecked Sendable {  // one fuzzing thread
    static let regions = [
        MemoryRegionSpec(guestAddress: 0, size: 2 << 20, userAddress: 0x7f00_0000_0000, mmapOffset: 0),
        MemoryRegionSpec(guestAddress: 0x40_0000, size: 1 << 20, userAddress: 0x7f00_1000_0000, mmapOffset: 2 << 20),
    ]
    static let totalSize = 3 << 20
    static let shared = FuzzGuest()

    let memory: GuestMemory
    private let raw: UnsafeMutableRawPointer

    private init() {
        let fd = clinux_memfd_create("hostvmm-fuzz", 1 /* MFD_CLOEXEC */)
        guard fd >= 0, ftruncate(fd, off_t(Self.totalSize)) == 0 else { fatalError("memfd for the fuzz guest") }
        memory = try! GuestMemory(table: Self.regions.map { (spec: $0, fd: fd) })
        raw = mmap(nil, Self.totalSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)!
    }

    private func offset(_ gpa: UInt64, _ count: Int) -> Int {
        for (i, r) in Self.regions.enumerated() where gpa >= r.guestAddress && gpa + UInt64(count) <= r.guestAddress + r.size {
            return Int(gpa - r.guestAddress) + (i == 0 ? 0 : 2 << 20)
        }
        fatalError("harness bug: \(count) bytes at \(gpa) are not guest memory")
    }

    func put<T: FixedWidthInteger>(_ v: T, at gpa: UInt64) {
        raw.storeBytes(of: v.littleEndian, toByteOffset: offset(gpa, MemoryLayout<T>.size), as: T.self)
    }

    func get<T: FixedWidthInteger>(_: T.Type, at gpa: UInt64) -> T {
        T(littleEndian: raw.loadUnaligned(fromByteOffset: offset(gpa, MemoryLayout<T>.size), as: T.self))
    }

    func put(_ bytes: [UInt8], at gpa: UInt64) {
        guard !bytes.isEmpty else { return }
        let o = offset(gpa, bytes.count)
        bytes.withUnsafeBytes { (raw + o).copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
    }

    func zero(_ count: Int, at gpa: UInt64) { memset(raw + offset(gpa, count), 0, count) }
}
