import CLinuxSupport
import Glibc
import LinuxSystem
@testable import VirtioCore

/// Deterministic random numbers (SplitMix64), so every fuzz case replays from its seed.
struct SeededRandom: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Guest memory in a memfd the test creates: two regions with a hole between
/// them, as QEMU's table has below and above its PCI hole.
///   region 0: guest 0x0000_0000 + 512 KiB  (fd offset 0)
///   region 1: guest 0x0010_0000 + 512 KiB  (fd offset 512 KiB)
/// The test writes through its own mapping (`bytes`), as a driver would.
final class TestGuest {
    static let regionSize: UInt64 = 512 << 10
    static let regions = [
        MemoryRegionSpec(guestAddress: 0, size: regionSize, userAddress: 0x7f00_0000_0000, mmapOffset: 0),
        MemoryRegionSpec(guestAddress: 0x10_0000, size: regionSize, userAddress: 0x7f00_1000_0000, mmapOffset: regionSize),
    ]
    let fd: Int32
    let memory: GuestMemory
    let raw: UnsafeMutableRawPointer

    init() throws {
        let fd = clinux_memfd_create("virtio-test", 1 /* MFD_CLOEXEC */)
        guard fd >= 0, ftruncate(fd, off_t(2 * Self.regionSize)) == 0 else { throw SystemError("memfd") }
        self.fd = fd
        memory = try GuestMemory(table: Self.regions.map { (spec: $0, fd: fd) })
        raw = mmap(nil, Int(2 * Self.regionSize), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)!
    }

    deinit {
        munmap(raw, Int(2 * Self.regionSize))
        close(fd)
    }

    /// The fd offset of a guest address, or nil outside both regions.
    func offset(_ gpa: UInt64) -> Int? {
        for (i, r) in Self.regions.enumerated() where gpa >= r.guestAddress && gpa < r.guestAddress + r.size {
            return Int(gpa - r.guestAddress) + i * Int(Self.regionSize)
        }
        return nil
    }

    func clear() { memset(raw, 0, Int(2 * Self.regionSize)) }

    func put<T: FixedWidthInteger>(_ v: T, at gpa: UInt64) {
        raw.storeBytes(of: v.littleEndian, toByteOffset: offset(gpa)!, as: T.self)
    }

    func get<T: FixedWidthInteger>(_: T.Type, at gpa: UInt64) -> T {
        T(littleEndian: raw.loadUnaligned(fromByteOffset: offset(gpa)!, as: T.self))
    }

    func putBytes(_ b: [UInt8], at gpa: UInt64) {
        let o = offset(gpa)!
        for (i, x) in b.enumerated() { raw.storeBytes(of: x, toByteOffset: o + i, as: UInt8.self) }
    }

    func getBytes(at gpa: UInt64, count: Int) -> [UInt8] {
        let o = offset(gpa)!
        return (0..<count).map { raw.load(fromByteOffset: o + $0, as: UInt8.self) }
    }
}

/// A split ring laid out by the test (the driver's side) in region 0.
struct TestRing {
    static let desc: UInt64 = 0x1000
    static let avail: UInt64 = 0x1_0000
    static let used: UInt64 = 0x2_0000
    let size: Int
    let guest: TestGuest

    func descriptor(_ i: Int, table: UInt64 = TestRing.desc, addr: UInt64, len: UInt32, flags: UInt16, next: UInt16) {
        let at = table + 16 * UInt64(i)
        guest.put(addr, at: at)
        guest.put(len, at: at + 8)
        guest.put(flags, at: at + 12)
        guest.put(next, at: at + 14)
    }

    func setAvail(slot: Int, head: UInt16) { guest.put(head, at: Self.avail + 4 + 2 * UInt64(slot % size)) }
    func setAvailIndex(_ idx: UInt16) { guest.put(idx, at: Self.avail + 2) }
    func setAvailFlags(_ f: UInt16) { guest.put(f, at: Self.avail) }
    func setUsedEvent(_ e: UInt16) { guest.put(e, at: Self.avail + 4 + 2 * UInt64(size)) }
    var usedIndex: UInt16 { guest.get(UInt16.self, at: Self.used + 2) }
    var availEvent: UInt16 { guest.get(UInt16.self, at: Self.used + 4 + 8 * UInt64(size)) }
    func usedEntry(_ slot: Int) -> (id: UInt32, len: UInt32) {
        let at = Self.used + 4 + 8 * UInt64(slot % size)
        return (guest.get(UInt32.self, at: at), guest.get(UInt32.self, at: at + 4))
    }

    func makeQueue(eventIndex: Bool = true, indirect: Bool = true, maxChainBytes: UInt64 = 1 << 20,
                   lastAvail: UInt16 = 0) throws -> SplitVirtqueue {
        try SplitVirtqueue(index: 0, size: size, descriptorTable: GuestAddress(Self.desc),
                           availRing: GuestAddress(Self.avail), usedRing: GuestAddress(Self.used), memory: guest.memory,
                           eventIndex: eventIndex, indirectDescriptors: indirect, lastAvailIndex: lastAvail,
                           maxChainBytes: maxChainBytes)
    }
}
