import CLinuxSupport
import LinuxSystem
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A guest-physical address. Addresses travel as this type, not a bare `UInt64`.
public struct GuestAddress: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var raw: UInt64
    public init(_ raw: UInt64) { self.raw = raw }
    public static func < (a: GuestAddress, b: GuestAddress) -> Bool { a.raw < b.raw }
    public var description: String { "0x" + String(raw, radix: 16) }
}

/// One region of the vhost-user memory table (vhost-user.rst, "Memory region description").
public struct MemoryRegionSpec: Sendable, Equatable {
    /// Where the region starts in guest-physical space.
    public var guestAddress: UInt64
    public var size: UInt64
    /// Where the frontend (QEMU) has the region mapped; vring addresses are given in this space.
    public var userAddress: UInt64
    /// Where the region starts in the file descriptor.
    public var mmapOffset: UInt64

    public init(guestAddress: UInt64, size: UInt64, userAddress: UInt64, mmapOffset: UInt64) {
        self.guestAddress = guestAddress
        self.size = size
        self.userAddress = userAddress
        self.mmapOffset = mmapOffset
    }
}

public enum GuestMemoryError: Error, Equatable, Sendable, CustomStringConvertible {
    /// `[address, address+length)` is not inside one region (outside memory, wraps, or crosses a region's end).
    case outOfRange(address: UInt64, length: UInt64)
    /// A frontend user address range that is not inside one region.
    case userAddressOutOfRange(address: UInt64, length: UInt64)
    /// The memory table itself is unusable.
    case invalidRegion(index: Int, reason: String)
    case tooManyRegions(Int)
    case mapFailed(index: Int, SystemError)

    public var description: String {
        switch self {
        case .outOfRange(let a, let l): return "guest range 0x\(String(a, radix: 16))+\(l) is outside guest memory"
        case .userAddressOutOfRange(let a, let l):
            return "frontend address 0x\(String(a, radix: 16))+\(l) is outside the memory table"
        case .invalidRegion(let i, let r): return "memory region \(i): \(r)"
        case .tooManyRegions(let n): return "\(n) memory regions (at most \(GuestMemory.maxRegions))"
        case .mapFailed(let i, let e): return "memory region \(i): \(e)"
        }
    }
}

/// Guest RAM shared by the frontend, mapped MAP_SHARED, with every access bounds-checked.
///
/// Threat model: every address and length comes from the guest (descriptor
/// tables) or the frontend (vring addresses), so each access passes
/// `checkedPointer(_:count:)`, the one function that forms a pointer into a
/// mapping: the end is computed without overflow and the whole range must lie
/// in one region. Ranges that cross from one region into the next are refused
/// (`outOfRange`) rather than split: guests never place one buffer across the
/// holes between QEMU's RAM regions, so a crossing range is treated as hostile.
///
/// Ownership: the instance owns its mappings and unmaps them in `deinit`; the
/// caller keeps (and closes) the file descriptors (the mapping holds its own
/// reference to the file). Replacing the memory table means building a new
/// `GuestMemory` and dropping the old one.
///
/// Concurrency: the guest writes this memory from vCPU threads at any time. We
/// never form Swift references into it; loads and stores go through raw
/// pointers, and ring code orders them with explicit fences.
public final class GuestMemory: @unchecked Sendable {
    /// The vhost-user memory table holds at most 8 regions (VHOST_MEMORY_BASELINE_NREGIONS).
    public static let maxRegions = 8

    struct Region {
        var spec: MemoryRegionSpec
        /// The first byte of the region (mapping + the part of mmapOffset below the page boundary).
        var base: UnsafeMutableRawPointer
        var mapping: UnsafeMutableRawPointer
        var mappingLength: Int
    }

    private let regions: [Region]

    /// Maps each region of `table` from its fd (MAP_SHARED, read/write).
    /// - Throws: `GuestMemoryError` if a region is empty, overflows, overlaps
    ///   another, extends past the end of its file, or cannot be mapped.
    public init(table: [(spec: MemoryRegionSpec, fd: Int32)]) throws(GuestMemoryError) {
        guard table.count <= Self.maxRegions else { throw .tooManyRegions(table.count) }
        let page = UInt64(sysconf(Int32(_SC_PAGESIZE)))
        var mapped: [Region] = []
        func unwind() { for r in mapped { munmap(r.mapping, r.mappingLength) } }
        for (i, entry) in table.enumerated() {
            let s = entry.spec
            guard s.size > 0 else { unwind(); throw .invalidRegion(index: i, reason: "size 0") }
            guard !s.guestAddress.addingReportingOverflow(s.size).overflow,
                !s.userAddress.addingReportingOverflow(s.size).overflow,
                !s.mmapOffset.addingReportingOverflow(s.size).overflow
            else { unwind(); throw .invalidRegion(index: i, reason: "address + size overflows") }
            for other in mapped {
                let o = other.spec
                if s.guestAddress < o.guestAddress + o.size && o.guestAddress < s.guestAddress + s.size {
                    unwind()
                    throw .invalidRegion(index: i, reason: "overlaps another region in guest-physical space")
                }
                if s.userAddress < o.userAddress + o.size && o.userAddress < s.userAddress + s.size {
                    unwind()
                    throw .invalidRegion(index: i, reason: "overlaps another region in frontend address space")
                }
            }
            // A mapping past the end of the file would SIGBUS on access: refuse it here.
            var st = stat()
            guard fstat(entry.fd, &st) == 0 else { unwind(); throw .mapFailed(index: i, SystemError("fstat")) }
            if (st.st_mode & S_IFMT) == S_IFREG {
                guard UInt64(st.st_size) >= s.mmapOffset + s.size else {
                    unwind()
                    throw .invalidRegion(index: i, reason: "extends past the end of its file (\(st.st_size) bytes)")
                }
            }
            let alignedOffset = s.mmapOffset & ~(page - 1)
            let lead = s.mmapOffset - alignedOffset
            guard let length = Int(exactly: s.size + lead), let offset = off_t(exactly: alignedOffset) else {
                unwind()
                throw .invalidRegion(index: i, reason: "too large to map")
            }
            let p = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_SHARED, entry.fd, offset)
            guard let p, p != MAP_FAILED else { unwind(); throw .mapFailed(index: i, SystemError("mmap")) }
            // SAFETY: lead < page <= length, so base stays inside the mapping.
            mapped.append(Region(spec: s, base: p + Int(lead), mapping: p, mappingLength: length))
        }
        regions = mapped
    }

    deinit {
        for r in regions { munmap(r.mapping, r.mappingLength) }
    }

    /// The one bounds check: a pointer to `count` bytes at `address`, all inside one region.
    /// A zero-length range must still start inside a region.
    @inline(__always)
    func checkedPointer(_ address: GuestAddress, count: UInt64) throws(GuestMemoryError) -> UnsafeMutableRawPointer {
        for r in regions {
            let start = r.spec.guestAddress
            guard address.raw >= start else { continue }
            let offset = address.raw - start
            guard offset < r.spec.size else { continue }
            // offset < size, so size - offset cannot underflow; no end address is ever computed.
            guard count <= r.spec.size - offset else { break }
            // SAFETY: offset + count <= size, and base..base+size is mapped.
            return r.base + Int(offset)
        }
        throw .outOfRange(address: address.raw, length: count)
    }

    /// True when `[address, address+count)` lies inside one region.
    public func contains(_ address: GuestAddress, count: UInt64) -> Bool {
        (try? checkedPointer(address, count: count)) != nil
    }

    /// Translates a frontend (QEMU) virtual address range to guest-physical; the
    /// whole range must lie in one region. Used for vring addresses.
    public func guestAddress(forUserAddress ua: UInt64, count: UInt64) throws(GuestMemoryError) -> GuestAddress {
        for r in regions {
            guard ua >= r.spec.userAddress else { continue }
            let offset = ua - r.spec.userAddress
            guard offset < r.spec.size else { continue }
            guard count <= r.spec.size - offset else { break }
            return GuestAddress(r.spec.guestAddress + offset)
        }
        throw .userAddressOutOfRange(address: ua, length: count)
    }

    // MARK: - Access

    @inline(__always)
    public func load<T: FixedWidthInteger>(_: T.Type, at address: GuestAddress) throws(GuestMemoryError) -> T {
        let p = try checkedPointer(address, count: UInt64(MemoryLayout<T>.size))
        // SAFETY: checked range of size(T); unaligned load copies the bytes.
        return T(littleEndian: p.loadUnaligned(as: T.self))
    }

    @inline(__always)
    public func store<T: FixedWidthInteger>(_ value: T, at address: GuestAddress) throws(GuestMemoryError) {
        let p = try checkedPointer(address, count: UInt64(MemoryLayout<T>.size))
        // SAFETY: checked range of size(T).
        p.storeBytes(of: value.littleEndian, as: T.self)
    }

    public func read(at address: GuestAddress, count: Int) throws(GuestMemoryError) -> [UInt8] {
        guard count >= 0 else { throw .outOfRange(address: address.raw, length: 0) }
        let p = try checkedPointer(address, count: UInt64(count))
        // SAFETY: checked range of `count` bytes.
        return [UInt8](UnsafeRawBufferPointer(start: p, count: count))
    }

    /// Copies `count` bytes at `address` to `destination` without an intermediate array
    /// (bulk copies such as a GPU's transfers). The range is checked like every access.
    public func copyBytes(at address: GuestAddress, count: Int, to destination: UnsafeMutableRawPointer) throws(GuestMemoryError) {
        guard count >= 0 else { throw .outOfRange(address: address.raw, length: 0) }
        let p = try checkedPointer(address, count: UInt64(count))
        guard count > 0 else { return }
        // SAFETY: checked range of `count` bytes; the caller owns `destination` for `count` bytes.
        destination.copyMemory(from: p, byteCount: count)
    }

    public func write(_ bytes: [UInt8], at address: GuestAddress) throws(GuestMemoryError) {
        let p = try checkedPointer(address, count: UInt64(bytes.count))
        guard !bytes.isEmpty else { return }
        // SAFETY: checked range of bytes.count bytes.
        bytes.withUnsafeBytes { p.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
    }
}

/// Memory ordering between our ring accesses and the guest's (virtio spec §2.7.13).
enum Fence {
    /// After reading an index, before reading what it publishes.
    @inline(__always) static func acquire() { atomicMemoryFence(ordering: .acquiring) }
    /// After writing entries, before publishing their index.
    @inline(__always) static func release() { atomicMemoryFence(ordering: .releasing) }
    /// Between publishing an index and reading the other side's event/flags (store-load).
    @inline(__always) static func full() { atomicMemoryFence(ordering: .sequentiallyConsistent) }
}
