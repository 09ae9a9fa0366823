/// Why a virtqueue stopped: the driver (guest) broke a rule of virtio spec §2.7,
/// or the frontend gave a ring that does not fit guest memory. Carries the queue
/// and the value at fault. Once a queue reports one of these it is broken: it
/// pops and pushes nothing more until it is set up again (device reset).
public enum VirtqueueError: Error, Equatable, Sendable, CustomStringConvertible {
    /// Queue size not a power of two in 1...32768.
    case invalidSize(queue: Int, size: Int)
    /// A ring part (descriptor table, avail or used ring) is misaligned or outside memory.
    case badRing(queue: Int, part: String, address: UInt64)
    /// avail.idx moved by more than the queue size since the last descriptor we took.
    case availIndexJump(queue: Int, lastSeen: UInt16, availIndex: UInt16)
    /// A head index taken from the avail ring is >= queue size.
    case headOutOfRange(queue: Int, head: UInt16)
    /// A NEXT index is >= the table it is in.
    case nextOutOfRange(queue: Int, head: UInt16, next: UInt16)
    /// More descriptors than the table holds: a loop.
    case descriptorLoop(queue: Int, head: UInt16)
    /// A buffer (or an indirect table) that is not inside guest memory.
    case bufferOutOfMemory(queue: Int, head: UInt16, address: UInt64, length: UInt32)
    /// The chain's total length is over the device's cap.
    case chainTooLarge(queue: Int, head: UInt16, bytes: UInt64)
    /// An INDIRECT descriptor inside an indirect table.
    case nestedIndirect(queue: Int, head: UInt16)
    /// INDIRECT used without VIRTIO_F_INDIRECT_DESC, or with NEXT, or with a bad table length.
    case badIndirect(queue: Int, head: UInt16, reason: String)
    /// A device-readable descriptor after a device-writable one.
    case readableAfterWritable(queue: Int, head: UInt16)

    public var description: String {
        switch self {
        case .invalidSize(let q, let s): return "queue \(q): size \(s) is not a power of two in 1...32768"
        case .badRing(let q, let part, let a): return "queue \(q): \(part) at 0x\(String(a, radix: 16)) is misaligned or outside guest memory"
        case .availIndexJump(let q, let l, let a): return "queue \(q): avail index jumped from \(l) to \(a)"
        case .headOutOfRange(let q, let h): return "queue \(q): head \(h) out of range"
        case .nextOutOfRange(let q, let h, let n): return "queue \(q): chain \(h): next \(n) out of range"
        case .descriptorLoop(let q, let h): return "queue \(q): chain \(h) loops"
        case .bufferOutOfMemory(let q, let h, let a, let l):
            return "queue \(q): chain \(h): buffer 0x\(String(a, radix: 16))+\(l) outside guest memory"
        case .chainTooLarge(let q, let h, let b): return "queue \(q): chain \(h) is \(b) bytes, over the cap"
        case .nestedIndirect(let q, let h): return "queue \(q): chain \(h): indirect descriptor inside an indirect table"
        case .badIndirect(let q, let h, let r): return "queue \(q): chain \(h): \(r)"
        case .readableAfterWritable(let q, let h): return "queue \(q): chain \(h): readable descriptor after a writable one"
        }
    }
}

/// One guest buffer of a chain: checked to lie inside guest memory when the chain was popped.
public struct GuestBuffer: Equatable, Sendable {
    public var address: GuestAddress
    public var length: UInt32
}

/// A descriptor chain taken from the avail ring: device-readable buffers, then device-writable ones.
public struct DescriptorChain: Equatable, Sendable {
    public var head: UInt16
    public var readable: [GuestBuffer]
    public var writable: [GuestBuffer]

    public var readableLength: UInt64 { readable.reduce(0) { $0 + UInt64($1.length) } }
    public var writableLength: UInt64 { writable.reduce(0) { $0 + UInt64($1.length) } }
}

/// A split virtqueue (virtio spec §2.7) in guest memory, device side.
///
/// Every index, address and length the driver supplies is checked: see
/// `VirtqueueError` for what makes a queue broken. A broken queue stays broken
/// (`broken` holds the first error) and never touches guest memory again; the
/// caller reports it and waits for a reset. No input makes it trap or access
/// memory outside `GuestMemory`.
///
/// Not thread-safe: one thread (hostvmm's event loop) owns a queue.
///
/// ```swift
/// while let chain = queue.pop() {
///     let written = device.handle(chain)          // reads chain.readable, fills chain.writable
///     queue.push(head: chain.head, length: written)
/// }
/// if queue.needsNotification() { signal(callFD) }
/// ```
public final class SplitVirtqueue {
    public static let maxSize = 32768
    /// A chain may describe at most this many bytes unless the device says otherwise:
    /// overlapping descriptors could otherwise make a device copy without bound.
    public static let defaultMaxChainBytes: UInt64 = 16 << 20
    /// An indirect table holds at most this many descriptors (the largest queue size).
    public static let maxIndirectDescriptors: UInt32 = 32768

    static let descNext: UInt16 = 1
    static let descWrite: UInt16 = 2
    static let descIndirect: UInt16 = 4
    static let availNoInterrupt: UInt16 = 1

    public let index: Int
    public let size: Int
    public let memory: GuestMemory
    public let descriptorTable: GuestAddress
    public let availRing: GuestAddress
    public let usedRing: GuestAddress
    /// VIRTIO_F_RING_EVENT_IDX negotiated.
    public let eventIndex: Bool
    /// VIRTIO_F_INDIRECT_DESC negotiated.
    public let indirectDescriptors: Bool
    public var maxChainBytes: UInt64

    /// The next avail ring entry we will take (free-running).
    public private(set) var lastAvailIndex: UInt16
    /// The next used ring entry we will fill (free-running).
    public private(set) var usedIndex: UInt16
    /// The used index at the last notification, nil before the first.
    private var signalledUsed: UInt16?
    public private(set) var broken: VirtqueueError?

    /// Checks the ring layout against memory and reads the used index from the ring
    /// (vhost-user: SET_VRING_BASE gives only the avail side).
    public init(index: Int, size: Int, descriptorTable: GuestAddress, availRing: GuestAddress, usedRing: GuestAddress,
                memory: GuestMemory, eventIndex: Bool, indirectDescriptors: Bool, lastAvailIndex: UInt16 = 0,
                maxChainBytes: UInt64 = SplitVirtqueue.defaultMaxChainBytes) throws(VirtqueueError) {
        guard size > 0, size <= Self.maxSize, size & (size - 1) == 0 else { throw .invalidSize(queue: index, size: size) }
        let n = UInt64(size)
        for (part, address, align, length) in [
            ("descriptor table", descriptorTable, UInt64(16), 16 * n),
            ("avail ring", availRing, 2, 6 + 2 * n),
            ("used ring", usedRing, 4, 6 + 8 * n),
        ] {
            guard address.raw % align == 0, memory.contains(address, count: length) else {
                throw .badRing(queue: index, part: part, address: address.raw)
            }
        }
        self.index = index
        self.size = size
        self.memory = memory
        self.descriptorTable = descriptorTable
        self.availRing = availRing
        self.usedRing = usedRing
        self.eventIndex = eventIndex
        self.indirectDescriptors = indirectDescriptors
        self.lastAvailIndex = lastAvailIndex
        self.maxChainBytes = maxChainBytes
        do {
            usedIndex = try memory.load(UInt16.self, at: GuestAddress(usedRing.raw + 2))
        } catch {
            throw .badRing(queue: index, part: "used ring", address: usedRing.raw)
        }
    }

    // Ring field addresses. All inside the ranges checked in init.
    private var availIdxAddress: GuestAddress { GuestAddress(availRing.raw + 2) }
    private func availEntryAddress(_ slot: Int) -> GuestAddress { GuestAddress(availRing.raw + 4 + 2 * UInt64(slot)) }
    private var usedEventAddress: GuestAddress { GuestAddress(availRing.raw + 4 + 2 * UInt64(size)) }
    private var usedIdxAddress: GuestAddress { GuestAddress(usedRing.raw + 2) }
    private func usedEntryAddress(_ slot: Int) -> GuestAddress { GuestAddress(usedRing.raw + 4 + 8 * UInt64(slot)) }
    private var availEventAddress: GuestAddress { GuestAddress(usedRing.raw + 4 + 8 * UInt64(size)) }

    /// Marks the queue broken (first error wins) and returns the error.
    @discardableResult
    public func markBroken(_ error: VirtqueueError) -> VirtqueueError {
        if broken == nil { broken = error }
        return broken!
    }

    /// The number of chains the driver has made available and we have not taken.
    private func pending() throws(VirtqueueError) -> Int {
        let avail = try ring { () throws(GuestMemoryError) in try memory.load(UInt16.self, at: availIdxAddress) }
        Fence.acquire()
        let count = Int(avail &- lastAvailIndex)
        guard count <= size else { throw .availIndexJump(queue: index, lastSeen: lastAvailIndex, availIndex: avail) }
        return count
    }

    /// Ring accesses were range-checked in init; a failure here means memory was
    /// replaced under us, which we report as a bad ring rather than trap.
    @inline(__always)
    private func ring<T>(_ body: () throws(GuestMemoryError) -> T) throws(VirtqueueError) -> T {
        do { return try body() } catch { throw .badRing(queue: index, part: "ring", address: availRing.raw) }
    }

    /// Takes the next available chain; nil when the ring is empty or the queue is broken.
    /// Check `broken` after a nil to tell the two apart.
    public func pop() -> DescriptorChain? {
        guard broken == nil else { return nil }
        do { return try popChecked() } catch { markBroken(error); return nil }
    }

    private func popChecked() throws(VirtqueueError) -> DescriptorChain? {
        var count = try pending()
        if count == 0 {
            guard eventIndex else { return nil }
            // Ask for a kick at the next buffer, then look again: the driver may
            // have added one between our read and its read of avail_event.
            try publishAvailEvent()
            Fence.full()
            count = try pending()
            if count == 0 { return nil }
        }
        // size divides 65536, so the free-running index wraps consistently.
        let slot = Int(lastAvailIndex) % size
        let head = try ring { () throws(GuestMemoryError) in try memory.load(UInt16.self, at: availEntryAddress(slot)) }
        guard Int(head) < size else { throw .headOutOfRange(queue: index, head: head) }
        let chain = try walk(head: head)
        lastAvailIndex &+= 1
        if eventIndex { try publishAvailEvent() }
        return chain
    }

    private struct Descriptor {
        var address: UInt64
        var length: UInt32
        var flags: UInt16
        var next: UInt16
    }

    private func descriptor(table: GuestAddress, at i: UInt32, head: UInt16) throws(VirtqueueError) -> Descriptor {
        // Callers keep i < the table's entry count, and the table's extent was checked.
        let at = GuestAddress(table.raw + 16 * UInt64(i))
        do {
            // One bounds check for the 16 bytes and no copy: this runs for every descriptor walked.
            let p = try memory.checkedPointer(at, count: 16)
            return Descriptor(address: UInt64(littleEndian: p.loadUnaligned(as: UInt64.self)),
                              length: UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 8, as: UInt32.self)),
                              flags: UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 12, as: UInt16.self)),
                              next: UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 14, as: UInt16.self)))
        } catch {
            throw .bufferOutOfMemory(queue: index, head: head, address: at.raw, length: 16)
        }
    }

    /// Follows a chain from `head` (§2.7.5): zero or more direct descriptors,
    /// possibly ending in one INDIRECT descriptor whose table is walked in turn.
    private func walk(head: UInt16) throws(VirtqueueError) -> DescriptorChain {
        var readable: [GuestBuffer] = []
        var writable: [GuestBuffer] = []
        var total: UInt64 = 0
        var table = descriptorTable
        var tableCount = UInt32(size)
        var inIndirect = false
        var i = UInt32(head)
        var seen: UInt32 = 0
        while true {
            seen += 1
            guard seen <= tableCount else { throw .descriptorLoop(queue: index, head: head) }
            let d = try descriptor(table: table, at: i, head: head)
            if d.flags & Self.descIndirect != 0 {
                guard !inIndirect else { throw .nestedIndirect(queue: index, head: head) }
                guard indirectDescriptors else {
                    throw .badIndirect(queue: index, head: head, reason: "INDIRECT without VIRTIO_F_INDIRECT_DESC")
                }
                guard d.flags & Self.descNext == 0 else {
                    throw .badIndirect(queue: index, head: head, reason: "INDIRECT together with NEXT")
                }
                guard d.length > 0, d.length % 16 == 0, d.length / 16 <= Self.maxIndirectDescriptors else {
                    throw .badIndirect(queue: index, head: head, reason: "indirect table length \(d.length)")
                }
                guard memory.contains(GuestAddress(d.address), count: UInt64(d.length)) else {
                    throw .bufferOutOfMemory(queue: index, head: head, address: d.address, length: d.length)
                }
                table = GuestAddress(d.address)
                tableCount = d.length / 16
                inIndirect = true
                i = 0
                seen = 0
                continue
            }
            guard memory.contains(GuestAddress(d.address), count: UInt64(d.length)) else {
                throw .bufferOutOfMemory(queue: index, head: head, address: d.address, length: d.length)
            }
            total += UInt64(d.length)
            guard total <= maxChainBytes else { throw .chainTooLarge(queue: index, head: head, bytes: total) }
            let buffer = GuestBuffer(address: GuestAddress(d.address), length: d.length)
            if d.flags & Self.descWrite != 0 {
                writable.append(buffer)
            } else {
                guard writable.isEmpty else { throw .readableAfterWritable(queue: index, head: head) }
                readable.append(buffer)
            }
            guard d.flags & Self.descNext != 0 else { break }
            guard UInt32(d.next) < tableCount else { throw .nextOutOfRange(queue: index, head: head, next: d.next) }
            i = UInt32(d.next)
        }
        return DescriptorChain(head: head, readable: readable, writable: writable)
    }

    /// avail_event (§2.7.10): the driver kicks when it makes available the entry after this one.
    private func publishAvailEvent() throws(VirtqueueError) {
        try ring { () throws(GuestMemoryError) in try memory.store(lastAvailIndex, at: availEventAddress) }
    }

    /// Returns a chain to the driver with `length` bytes written into its writable buffers.
    /// - Precondition: `head` came from `pop()` and `length <= writableLength` of that chain.
    public func push(head: UInt16, length: UInt32) {
        guard broken == nil else { return }
        do {
            let slot = Int(usedIndex) % size
            try ring { () throws(GuestMemoryError) in
                try memory.store(UInt32(head), at: usedEntryAddress(slot))
                try memory.store(length, at: GuestAddress(usedEntryAddress(slot).raw + 4))
            }
            usedIndex &+= 1
            Fence.release()
            try ring { () throws(GuestMemoryError) in try memory.store(usedIndex, at: usedIdxAddress) }
        } catch {
            markBroken(error)
        }
    }

    /// Whether the driver wants an interrupt for what was pushed since the last
    /// notification (§2.7.7.2, §2.7.10). Records the notification when it
    /// returns true, so call it once and signal when it says so.
    public func needsNotification() -> Bool {
        guard broken == nil else { return false }
        Fence.full()
        do {
            if eventIndex {
                let event = try ring { () throws(GuestMemoryError) in try memory.load(UInt16.self, at: usedEventAddress) }
                defer { signalledUsed = usedIndex }
                guard let old = signalledUsed else { return true }
                // vring_need_event: event lies in [old, new).
                return (usedIndex &- event &- 1) < (usedIndex &- old)
            }
            let flags = try ring { () throws(GuestMemoryError) in try memory.load(UInt16.self, at: availRing) }
            return flags & Self.availNoInterrupt == 0
        } catch {
            markBroken(error)
            return false
        }
    }

    /// Test hook: rewrites the descriptor the next chain starts at so that it
    /// points at itself with NEXT, as a hostile driver would. Returns false if
    /// no chain is pending.
    public func _corruptNextChainForTesting() -> Bool {
        guard broken == nil, let pendingCount = try? pending(), pendingCount > 0,
            let head = try? memory.load(UInt16.self, at: availEntryAddress(Int(lastAvailIndex) % size)), Int(head) < size
        else { return false }
        let at = GuestAddress(descriptorTable.raw + 16 * UInt64(head))
        do {
            let flags = try memory.load(UInt16.self, at: GuestAddress(at.raw + 12))
            try memory.store((flags | Self.descNext) & ~Self.descIndirect, at: GuestAddress(at.raw + 12))
            try memory.store(head, at: GuestAddress(at.raw + 14))
            return true
        } catch {
            return false
        }
    }
}

extension DescriptorChain {
    /// Copies `bytes` into the writable buffers in order; returns how many fitted.
    public func write(_ bytes: [UInt8], memory: GuestMemory) throws(GuestMemoryError) -> Int {
        var done = 0
        for buffer in writable where done < bytes.count {
            let n = min(Int(buffer.length), bytes.count - done)
            try memory.write(Array(bytes[done..<(done + n)]), at: buffer.address)
            done += n
        }
        return done
    }

    /// The readable buffers' bytes, at most `limit` of them.
    public func read(memory: GuestMemory, limit: Int) throws(GuestMemoryError) -> [UInt8] {
        var out: [UInt8] = []
        for buffer in readable where out.count < limit {
            out += try memory.read(at: buffer.address, count: min(Int(buffer.length), limit - out.count))
        }
        return out
    }
}
