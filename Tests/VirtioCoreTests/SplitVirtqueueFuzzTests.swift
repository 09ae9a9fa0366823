import Foundation
import Testing
@testable import VirtioCore

/// Property tests of the split virtqueue against a test-side driver writing
/// real guest memory (a memfd). Seeds are fixed: a failure names its seed.
@Suite struct SplitVirtqueueFuzzTests {
    enum Hostile: CaseIterable {
        case none, loop, indirectLoop, nextOutOfRange, indirectNextOutOfRange, headOutOfRange, outsideMemory,
            crossesRegion, wrapsAround, tooLarge, nestedIndirect, indirectWithNext, indirectBadLength,
            indirectNotNegotiated, availJump, readableAfterWritable
    }

    enum Category: Equatable {
        case loop, next, head, memory, tooLarge, nested, badIndirect, jump, order
        init(_ e: VirtqueueError) {
            switch e {
            case .descriptorLoop: self = .loop
            case .nextOutOfRange: self = .next
            case .headOutOfRange: self = .head
            case .bufferOutOfMemory: self = .memory
            case .chainTooLarge: self = .tooLarge
            case .nestedIndirect: self = .nested
            case .badIndirect: self = .badIndirect
            case .availIndexJump: self = .jump
            case .readableAfterWritable: self = .order
            case .invalidSize, .badRing: self = .memory
            }
        }
    }

    static func expected(_ h: Hostile) -> Category? {
        switch h {
        case .none: return nil
        case .loop, .indirectLoop: return .loop
        case .nextOutOfRange, .indirectNextOutOfRange: return .next
        case .headOutOfRange: return .head
        case .outsideMemory, .crossesRegion, .wrapsAround: return .memory
        case .tooLarge: return .tooLarge
        case .nestedIndirect: return .nested
        case .indirectWithNext, .indirectBadLength, .indirectNotNegotiated: return .badIndirect
        case .availJump: return .jump
        case .readableAfterWritable: return .order
        }
    }

    struct Buf: Equatable { var addr: UInt64; var len: UInt32; var write: Bool }

    static let indirectArea: UInt64 = 0x3_0000  // 64 KiB of indirect tables
    static func randomBuffer(_ rng: inout SeededRandom, write: Bool, maxLen: UInt32 = 4096) -> Buf {
        let len = UInt32.random(in: 0...maxLen, using: &rng)
        let region1 = Bool.random(using: &rng)
        let lo: UInt64 = region1 ? 0x10_0000 : 0x4_0000
        let hi: UInt64 = region1 ? 0x18_0000 : 0x8_0000
        let addr = UInt64.random(in: lo...(hi - UInt64(max(len, 1))), using: &rng)
        return Buf(addr: addr, len: len, write: write)
    }

    /// Writes one chain at descriptor indices `slots` (direct part) and, if `indirectCount` > 0, an indirect
    /// table of that many descriptors at `table`. Returns the buffers in order.
    static func writeChain(_ ring: TestRing, _ rng: inout SeededRandom, slots: [Int], indirectCount: Int, table: UInt64,
                           allSameDirection: Bool, maxLen: UInt32) -> [Buf] {
        let total = slots.count - (indirectCount > 0 ? 1 : 0) + indirectCount
        let readable = allSameDirection ? (Bool.random(using: &rng) ? total : 0) : Int.random(in: 0...total, using: &rng)
        var bufs = (0..<total).map { randomBuffer(&rng, write: $0 >= readable, maxLen: maxLen) }
        if bufs.allSatisfy({ $0.len == 0 }) { bufs[0].len = 1 }
        let directBufs = indirectCount > 0 ? slots.count - 1 : slots.count
        for (k, slot) in slots.enumerated() {
            if k < directBufs {
                let b = bufs[k]
                let last = k == slots.count - 1
                ring.descriptor(slot, addr: b.addr, len: b.len, flags: (b.write ? 2 : 0) | (last ? 0 : 1),
                                next: last ? 0 : UInt16(slots[k + 1]))
            } else {
                ring.descriptor(slot, addr: table, len: UInt32(16 * indirectCount), flags: 4, next: 0)
            }
        }
        for j in 0..<indirectCount {
            let b = bufs[directBufs + j]
            let last = j == indirectCount - 1
            ring.descriptor(j, table: table, addr: b.addr, len: b.len, flags: (b.write ? 2 : 0) | (last ? 0 : 1),
                            next: last ? 0 : UInt16(j + 1))
        }
        return bufs
    }

    /// Thousands of constructed cases: valid chains round-trip, each hostile kind breaks the queue with its own error.
    @Test func constructedChains() throws {
        let guest = try TestGuest()
        /// Cases per kind whose verdict was the expected one (refused as its category, or accepted).
        var counts: [Hostile: Int] = [:]
        let cases = 6000
        let start = Date()
        for seed in 0..<UInt64(cases) {
            var rng = SeededRandom(seed: seed)
            let hostile = Hostile.allCases[Int(seed) % Hostile.allCases.count]
            guest.clear()
            let needsIndirect: Set<Hostile> = [.indirectLoop, .indirectNextOutOfRange, .nestedIndirect, .indirectWithNext,
                                               .indirectBadLength, .indirectNotNegotiated]
            let minSize = hostile == .readableAfterWritable || hostile == .loop ? 2 : 1
            let size = max(minSize, 1 << Int.random(in: 0...8, using: &rng))
            let ring = TestRing(size: size, guest: guest)
            let useIndirect = needsIndirect.contains(hostile) || (hostile == .none && Bool.random(using: &rng))
            var direct = Int.random(in: 1...min(size, 6), using: &rng)
            if hostile == .readableAfterWritable && !useIndirect { direct = max(2, direct) }
            if hostile == .loop { direct = max(2, direct) }
            let indirectCount = useIndirect
                ? Int.random(in: (hostile == .indirectLoop || hostile == .readableAfterWritable ? 2 : 1)...8, using: &rng) : 0
            var slots = Array(0..<size)
            slots.shuffle(using: &rng)
            slots = Array(slots.prefix(direct))
            let table = Self.indirectArea + 0x1000 * UInt64.random(in: 0..<15, using: &rng)
            let same = hostile == .loop || hostile == .indirectLoop
            var bufs = Self.writeChain(ring, &rng, slots: slots, indirectCount: indirectCount, table: table,
                                       allSameDirection: same, maxLen: 4096)
            let last = UInt16.random(in: 0...UInt16.max, using: &rng)
            ring.setAvail(slot: Int(last), head: UInt16(slots[0]))
            ring.setAvailIndex(last &+ 1)
            var maxBytes: UInt64 = 4 << 20
            var indirectNegotiated = true
            let directBufs = useIndirect ? slots.count - 1 : slots.count

            switch hostile {
            case .none: break
            case .loop:
                let s = slots[directBufs - 1]
                let b = bufs[directBufs - 1]
                ring.descriptor(s, addr: b.addr, len: b.len, flags: (b.write ? 2 : 0) | 1, next: UInt16(slots[0]))
            case .indirectLoop:
                let b = bufs[bufs.count - 1]
                ring.descriptor(indirectCount - 1, table: table, addr: b.addr, len: b.len, flags: (b.write ? 2 : 0) | 1,
                                next: 0)
            case .nextOutOfRange:
                let s = slots[slots.count - 1]
                let flagsNow = guest.get(UInt16.self, at: TestRing.desc + 16 * UInt64(s) + 12)
                if flagsNow & 4 != 0 {  // the indirect descriptor: break the direct part instead
                    guest.put(UInt16(size) &+ UInt16.random(in: 0...100, using: &rng),
                              at: TestRing.desc + 16 * UInt64(slots[0]) + 14)
                    guest.put(guest.get(UInt16.self, at: TestRing.desc + 16 * UInt64(slots[0]) + 12) | 1,
                              at: TestRing.desc + 16 * UInt64(slots[0]) + 12)
                } else {
                    guest.put(flagsNow | 1, at: TestRing.desc + 16 * UInt64(s) + 12)
                    guest.put(UInt16(min(65535, size + Int.random(in: 0...1000, using: &rng))),
                              at: TestRing.desc + 16 * UInt64(s) + 14)
                }
            case .indirectNextOutOfRange:
                let at = table + 16 * UInt64(indirectCount - 1)
                guest.put(guest.get(UInt16.self, at: at + 12) | 1, at: at + 12)
                guest.put(UInt16(indirectCount + Int.random(in: 0...50, using: &rng)), at: at + 14)
            case .headOutOfRange:
                ring.setAvail(slot: Int(last), head: UInt16(min(65535, size + Int.random(in: 0...5000, using: &rng))))
            case .outsideMemory, .crossesRegion, .wrapsAround:
                // Break the first buffer the walk reaches, so nothing earlier fails first.
                let (at, len): (UInt64, UInt32) = {
                    switch hostile {
                    case .outsideMemory:
                        return Bool.random(using: &rng)
                            ? (UInt64.random(in: 0x8_0000..<0x10_0000, using: &rng), UInt32.random(in: 0...64, using: &rng))
                            : (UInt64.random(in: 0x18_0000...(1 << 40), using: &rng), 8)
                    case .crossesRegion: return (0x8_0000 - 16, UInt32.random(in: 17...4096, using: &rng))
                    default: return (UInt64.max - UInt64.random(in: 0...64, using: &rng), 128)
                    }
                }()
                let descAt = directBufs > 0 ? TestRing.desc + 16 * UInt64(slots[0]) : table
                guest.put(at, at: descAt)
                guest.put(len, at: descAt + 8)
                bufs[0].addr = at
            case .tooLarge:
                let total = bufs.reduce(UInt64(0)) { $0 + UInt64($1.len) }
                maxBytes = total - 1
            case .nestedIndirect:
                guest.put(guest.get(UInt16.self, at: table + 12) | 4, at: table + 12)
            case .indirectWithNext:
                let s = slots[slots.count - 1]
                let at = TestRing.desc + 16 * UInt64(s)
                guest.put(guest.get(UInt16.self, at: at + 12) | 1, at: at + 12)
                guest.put(UInt16(slots[0]), at: at + 14)
            case .indirectBadLength:
                let s = slots[slots.count - 1]
                let bad: UInt32 = [0, 17, 15, UInt32(16 * 32769)].randomElement(using: &rng)!
                guest.put(bad, at: TestRing.desc + 16 * UInt64(s) + 8)
            case .indirectNotNegotiated:
                indirectNegotiated = false
            case .availJump:
                ring.setAvailIndex(last &+ UInt16(size) &+ 1 &+ UInt16.random(in: 0...1000, using: &rng))
            case .readableAfterWritable:
                // First buffer writable, last readable.
                let firstAt = directBufs > 0 ? TestRing.desc + 16 * UInt64(slots[0]) : table
                let lastAt = useIndirect ? table + 16 * UInt64(indirectCount - 1) : TestRing.desc + 16 * UInt64(slots[slots.count - 1])
                guest.put(guest.get(UInt16.self, at: firstAt + 12) | 2, at: firstAt + 12)
                guest.put(guest.get(UInt16.self, at: lastAt + 12) & ~2, at: lastAt + 12)
            }

            let q = try ring.makeQueue(eventIndex: true, indirect: indirectNegotiated, maxChainBytes: maxBytes,
                                       lastAvail: last)
            let chain = q.pop()
            if let category = Self.expected(hostile) {
                #expect(chain == nil, "seed \(seed) \(hostile): popped \(String(describing: chain))")
                #expect(q.broken.map(Category.init) == category, "seed \(seed) \(hostile): \(String(describing: q.broken))")
                if chain == nil && q.broken.map(Category.init) == category { counts[hostile, default: 0] += 1 }
                let usedBefore = ring.usedIndex
                q.push(head: 0, length: 0)
                #expect(ring.usedIndex == usedBefore, "seed \(seed): a broken queue wrote the used ring")
                #expect(q.pop() == nil)
            } else {
                let c = try #require(chain, "seed \(seed): valid chain refused: \(String(describing: q.broken))")
                counts[hostile, default: 0] += 1
                #expect(q.broken == nil)
                #expect(c.head == UInt16(slots[0]))
                let got = c.readable.map { Buf(addr: $0.address.raw, len: $0.length, write: false) }
                    + c.writable.map { Buf(addr: $0.address.raw, len: $0.length, write: true) }
                #expect(got == bufs, "seed \(seed): chain differs")
                for b in c.readable + c.writable { #expect(guest.memory.contains(b.address, count: UInt64(b.length))) }
                #expect(ring.availEvent == last &+ 1, "seed \(seed): avail_event not published")
                let written = UInt32(min(c.writableLength, 1000))
                q.push(head: c.head, length: written)
                #expect(ring.usedIndex == q.usedIndex)
                let entry = ring.usedEntry(Int(q.usedIndex &- 1))
                #expect(entry.id == UInt32(c.head) && entry.len == written)
                #expect(q.pop() == nil && q.broken == nil)
            }
        }
        let rate = Double(cases) / Date().timeIntervalSince(start)
        print("constructedChains: \(cases) cases, \(Int(rate)) cases/s, \(counts.count) kinds judged right")
        // Every kind was judged right at least once (a kind the code always misjudges is missing).
        #expect(counts.count == Hostile.allCases.count, "judged right per kind: \(counts)")
    }

    /// Random descriptor tables checked against a small independent model of the rules:
    /// same verdict (broken or not), same buffers, and nothing returned outside memory.
    @Test func randomTablesMatchModel() throws {
        let guest = try TestGuest()
        let cases = 6000
        var brokenCount = 0
        let start = Date()
        for seed in UInt64(100_000)..<UInt64(100_000 + cases) {
            var rng = SeededRandom(seed: seed)
            guest.clear()
            let size = 1 << Int.random(in: 0...6, using: &rng)
            let ring = TestRing(size: size, guest: guest)
            func randomAddress() -> UInt64 {
                switch Int.random(in: 0..<6, using: &rng) {
                case 0: return UInt64.random(in: 0...UInt64.max, using: &rng)
                case 1: return TestRing.desc  // an indirect table that is the ring's own table
                case 2: return Self.indirectArea + 16 * UInt64.random(in: 0..<64, using: &rng)
                case 3: return UInt64.random(in: 0x7_f000..<0x8_1000, using: &rng)  // near region 0's end
                default: return UInt64.random(in: 0x4_0000..<0x18_0000, using: &rng)
                }
            }
            func randomLength() -> UInt32 {
                switch Int.random(in: 0..<5, using: &rng) {
                case 0: return UInt32.random(in: 0...UInt32.max, using: &rng)
                case 1: return 16 * UInt32.random(in: 0...8, using: &rng)
                default: return UInt32.random(in: 0...5000, using: &rng)
                }
            }
            func randomDescriptor(_ i: Int, table: UInt64, count: Int) {
                let flags = UInt16.random(in: 0...7, using: &rng) | (Int.random(in: 0..<4, using: &rng) == 0 ? UInt16.random(in: 0...0xffff, using: &rng) : 0)
                let next = UInt16.random(in: 0...UInt16(min(65535, count + 2)), using: &rng)
                ring.descriptor(i, table: table, addr: randomAddress(), len: randomLength(), flags: flags, next: next)
            }
            for i in 0..<size { randomDescriptor(i, table: TestRing.desc, count: size) }
            for i in 0..<64 { randomDescriptor(i, table: Self.indirectArea, count: 8) }
            let last = UInt16.random(in: 0...UInt16.max, using: &rng)
            for k in 0..<size { ring.setAvail(slot: k, head: UInt16.random(in: 0...UInt16(size + 1), using: &rng)) }
            let pendingCount = Int.random(in: 1...(size + 2), using: &rng)
            ring.setAvailIndex(last &+ UInt16(pendingCount))
            let indirect = Bool.random(using: &rng)
            let maxBytes: UInt64 = Bool.random(using: &rng) ? 8192 : 16 << 20
            let q = try ring.makeQueue(eventIndex: true, indirect: indirect, maxChainBytes: maxBytes, lastAvail: last)

            let model = Model(guest: guest, size: size, indirect: indirect, maxBytes: maxBytes)
            let expected = model.pop(last: last, availIndex: last &+ UInt16(pendingCount))
            let chain = q.pop()
            switch expected {
            case nil:
                #expect(chain == nil, "seed \(seed): model says broken, queue popped")
                #expect(q.broken != nil, "seed \(seed): model says broken")
                brokenCount += 1
            case let bufs?:
                let c = try #require(chain, "seed \(seed): model accepts, queue says \(String(describing: q.broken))")
                let got = c.readable.map { Buf(addr: $0.address.raw, len: $0.length, write: false) }
                    + c.writable.map { Buf(addr: $0.address.raw, len: $0.length, write: true) }
                #expect(got == bufs, "seed \(seed)")
            }
            if let c = chain {
                for b in c.readable + c.writable { #expect(guest.memory.contains(b.address, count: UInt64(b.length))) }
                #expect(c.readableLength + c.writableLength <= maxBytes)
            }
        }
        let rate = Double(cases) / Date().timeIntervalSince(start)
        print("randomTablesMatchModel: \(cases) cases, \(brokenCount) hostile, \(Int(rate)) cases/s")
        #expect(brokenCount > cases / 4 && brokenCount < cases)
    }

    /// The rules, written once more as plainly as possible, reading the test's own mapping.
    struct Model {
        let guest: TestGuest
        let size: Int
        let indirect: Bool
        let maxBytes: UInt64

        func inside(_ a: UInt64, _ len: UInt32) -> Bool {
            for r in TestGuest.regions where a >= r.guestAddress && a < r.guestAddress + r.size {
                return UInt64(len) <= r.guestAddress + r.size - a
            }
            return false
        }

        /// nil: the queue must break.
        func pop(last: UInt16, availIndex: UInt16) -> [Buf]? {
            guard Int(availIndex &- last) <= size else { return nil }
            let head = guest.get(UInt16.self, at: TestRing.avail + 4 + 2 * UInt64(Int(last) % size))
            guard Int(head) < size else { return nil }
            var out: [Buf] = []
            var total: UInt64 = 0
            var table = TestRing.desc, count = size, i = Int(head), steps = 0, nested = false
            while true {
                steps += 1
                if steps > count { return nil }
                let at = table + 16 * UInt64(i)
                let addr = guest.get(UInt64.self, at: at), len = guest.get(UInt32.self, at: at + 8)
                let flags = guest.get(UInt16.self, at: at + 12), next = guest.get(UInt16.self, at: at + 14)
                if flags & 4 != 0 {
                    if nested || !indirect || flags & 1 != 0 { return nil }
                    if len == 0 || len % 16 != 0 || len / 16 > 32768 || !inside(addr, len) { return nil }
                    table = addr; count = Int(len / 16); i = 0; steps = 0; nested = true
                    continue
                }
                if !inside(addr, len) { return nil }
                total += UInt64(len)
                if total > maxBytes { return nil }
                let write = flags & 2 != 0
                if !write && out.contains(where: { $0.write }) { return nil }
                out.append(Buf(addr: addr, len: len, write: write))
                if flags & 1 == 0 { return out }
                if Int(next) >= count { return nil }
                i = Int(next)
            }
        }
    }

    @Test func notificationSuppression() throws {
        let guest = try TestGuest()
        let ring = TestRing(size: 8, guest: guest)
        for i in 0..<8 { ring.descriptor(i, addr: 0x4_0000 + 64 * UInt64(i), len: 64, flags: 2, next: 0) }
        for k in 0..<8 { ring.setAvail(slot: k, head: UInt16(k)) }
        ring.setAvailIndex(8)
        // EVENT_IDX: the driver asks for an interrupt once used passes used_event.
        let q = try ring.makeQueue(eventIndex: true)
        ring.setUsedEvent(2)
        var signals: [Bool] = []
        for _ in 0..<5 {
            let c = try #require(q.pop())
            q.push(head: c.head, length: 8)
            signals.append(q.needsNotification())
        }
        // First push: nothing signalled yet, so signal. Then used goes 2 (no: event 2 means "after entry 2
        // is used", i.e. when used idx moves past 3), 3 (yes), 4, 5 (no).
        #expect(signals == [true, false, true, false, false])
        // Without EVENT_IDX, VIRTQ_AVAIL_F_NO_INTERRUPT suppresses.
        let q2 = try ring.makeQueue(eventIndex: false, lastAvail: 5)
        ring.setAvailFlags(1)
        let c = try #require(q2.pop())
        q2.push(head: c.head, length: 1)
        #expect(!q2.needsNotification())
        ring.setAvailFlags(0)
        #expect(q2.needsNotification())
    }

    @Test func ringLayoutIsChecked() throws {
        let guest = try TestGuest()
        func make(size: Int, desc: UInt64 = TestRing.desc, avail: UInt64 = TestRing.avail, used: UInt64 = TestRing.used) -> VirtqueueError? {
            do {
                _ = try SplitVirtqueue(index: 3, size: size, descriptorTable: GuestAddress(desc), availRing: GuestAddress(avail),
                                       usedRing: GuestAddress(used), memory: guest.memory, eventIndex: true,
                                       indirectDescriptors: true)
                return nil
            } catch { return error }
        }
        #expect(make(size: 0) == .invalidSize(queue: 3, size: 0))
        #expect(make(size: 3) == .invalidSize(queue: 3, size: 3))
        #expect(make(size: 65536) == .invalidSize(queue: 3, size: 65536))
        #expect(make(size: 256, desc: 0x8_0000 - 16 * 255) != nil)  // runs off region 0's end
        #expect(make(size: 256, desc: UInt64.max - 15) != nil)  // wraps
        #expect(make(size: 8, used: TestRing.used + 2) != nil)  // misaligned
        #expect(make(size: 256) == nil)
    }
}
