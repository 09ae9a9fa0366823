import VirtioCore
import VirtioGPU
import VirtioInput
import VirtioSound

/// What a guest driver controls: vhost-user messages (from QEMU, on the guest's
/// behalf), the rings in guest memory, and each device's requests.
enum VirtioTargets {
    static let all: [FuzzTarget] = [
        FuzzTarget(name: "vhost-user-message", run: vhostUserMessage),
        FuzzTarget(name: "virtqueue", run: virtqueue),
        FuzzTarget(name: "virtio-gpu", run: { DeviceHarness.run(VirtioGPUDevice(maxHostBytes: 8 << 20), $0) }),
        FuzzTarget(name: "virtio-input", run: { DeviceHarness.run(VirtioInputDevice(flavour: .tablet), $0) }),
        FuzzTarget(name: "virtio-snd", run: { DeviceHarness.run(VirtioSoundDevice(), $0) }),
    ]

    /// Header and payload decoding: what decodes encodes back to the same fields.
    static func vhostUserMessage(_ input: [UInt8]) {
        guard let header = try? VhostUserHeader.decode(input) else { return }
        require(header.size <= VhostUserHeader.maxPayload, "payload of \(header.size) bytes accepted")
        require(Array(input.prefix(VhostUserHeader.size)) == header.encoded(), "header does not re-encode")
        let payload = Array(input.dropFirst(VhostUserHeader.size).prefix(Int(header.size)))
        let r = header.request
        if let v = try? VhostUserPayload.u64(r, payload) {
            require(try! VhostUserPayload.u64(r, VhostUserPayload.encode(v)) == v, "u64 round trip")
        }
        if let s = try? VhostUserPayload.vringState(r, payload) {
            require(try! VhostUserPayload.vringState(r, VhostUserPayload.encode(s)) == s, "vring state round trip")
        }
        if let a = try? VhostUserPayload.vringAddress(r, payload) {
            require(try! VhostUserPayload.vringAddress(r, VhostUserPayload.encode(a)) == a, "vring address round trip")
        }
        if let table = try? VhostUserPayload.memoryTable(r, payload) {
            require(!table.isEmpty && table.count <= GuestMemory.maxRegions, "\(table.count) regions accepted")
            require(try! VhostUserPayload.memoryTable(r, VhostUserPayload.encode(memoryTable: table)) == table,
                    "memory table round trip")
        }
        for withData in [false, true] {
            if let c = try? VhostUserPayload.config(r, payload, withData: withData) {
                require(c.size <= VhostUserPayload.ConfigAccess.maxSize, "config access of \(c.size) bytes accepted")
                require(c.payload.count == (withData ? Int(c.size) : 0), "config data of \(c.payload.count) bytes")
            }
        }
    }

    /// The split-ring walker over a ring area the fuzzer writes: every buffer it
    /// yields lies in guest memory, every chain stays within the byte limit, it
    /// never yields more chains than the guest made available, and once broken it
    /// yields nothing.
    static func virtqueue(_ input: [UInt8]) {
        let guest = FuzzGuest.shared
        var reader = FuzzReader(input)
        let size = 1 << Int(reader.u8() % 6)  // 1...32
        let flags = reader.u8()
        let maxChainBytes = UInt64(reader.u16()) * 64
        // Ring parts at the top of region 0; indirect tables and data anywhere the
        // descriptors say, so they may point at the hole, past the end, or into the rings.
        let table: UInt64 = 0x1F_0000, avail: UInt64 = 0x1F_8000, used: UInt64 = 0x1F_C000
        guest.zero(16 * 32, at: table)
        guest.zero(6 + 2 * 32, at: avail)
        guest.zero(6 + 8 * 32, at: used)
        guest.put(reader.take(16 * size), at: table)
        guest.put(reader.take(6 + 2 * size), at: avail)
        // Indirect tables the descriptors may point at.
        guest.put(reader.rest(), at: 0x10_0000)
        guard let queue = try? SplitVirtqueue(
            index: 0, size: size, descriptorTable: GuestAddress(table), availRing: GuestAddress(avail),
            usedRing: GuestAddress(used), memory: guest.memory, eventIndex: flags & 1 != 0,
            indirectDescriptors: flags & 2 != 0, maxChainBytes: maxChainBytes)
        else { fatalError("invariant broken: a ring inside guest memory was refused") }
        let availIndex = guest.get(UInt16.self, at: avail + 2)
        var popped = 0
        while let chain = queue.pop() {
            popped += 1
            require(popped <= Int(availIndex), "popped \(popped) chains, \(availIndex) were made available")
            require(Int(chain.head) < size, "head \(chain.head) in a ring of \(size)")
            for b in chain.readable + chain.writable {
                require(guest.memory.contains(b.address, count: UInt64(b.length)), "buffer \(b.address)+\(b.length) outside memory")
            }
            require(chain.readableLength + chain.writableLength <= maxChainBytes, "chain of \(chain.readableLength + chain.writableLength) bytes, limit \(maxChainBytes)")
            if flags & 4 != 0 { queue.push(head: chain.head, length: UInt32(min(chain.writableLength, UInt64(UInt32.max)))) }
        }
        if queue.broken != nil { require(queue.pop() == nil, "a broken queue yielded a chain") }
    }
}

/// Drives one device the way a hostile guest driver can: requests of any
/// content on any queue, each a well-formed chain (the walker has its own
/// target) of one readable buffer and one writable one. Checks that every used
/// entry answers a chain that is outstanding, once, with no more bytes than it
/// could hold.
enum DeviceHarness {
    static let ringSize = 16
    static func ring(_ q: Int) -> (table: UInt64, avail: UInt64, used: UInt64) {
        let base = 0x1000 + UInt64(q) * 0x1000
        return (base, base + 0x400, base + 0x800)
    }
    /// Each chain's buffers: readable at 0x2_0000 + slot * 4 KiB, writable at 0x10_0000 + slot * 4 KiB.
    static func readableAt(_ q: Int, _ head: Int) -> UInt64 { 0x2_0000 + UInt64(q * ringSize + head) * 0x1000 }
    static func writableAt(_ q: Int, _ head: Int) -> UInt64 { 0x10_0000 + UInt64(q * ringSize + head) * 0x1000 }
    /// Guest pages a request may name as backing (virtio-gpu); region 1.
    static let backing: UInt64 = 0x40_0000

    final class Queues: VirtioQueueAccess {
        var queues: [SplitVirtqueue] = []
        func queue(_ index: Int) -> SplitVirtqueue? {
            index < queues.count && queues[index].broken == nil ? queues[index] : nil
        }
        func isEnabled(_ index: Int) -> Bool { index < queues.count }
        func notify(_ index: Int) {}
    }

    static func run(_ device: VirtioDeviceBackend, _ input: [UInt8]) {
        let guest = FuzzGuest.shared
        let count = min(device.queueCount, 4)
        let queues = Queues()
        queues.queues = (0..<count).map { makeQueue($0, device) }
        device.attach(queues)
        var outstanding = Array(repeating: [Int: UInt32](), count: count)  // head -> writable length
        var availIndex = Array(repeating: UInt16(0), count: count)
        var usedSeen = Array(repeating: UInt16(0), count: count)
        var now: UInt64 = 1_000
        var reader = FuzzReader(input)
        while !reader.isAtEnd {
            let op = reader.u8()
            switch op >> 6 {
            case 0, 1:  // a request on queue op % count
                let q = Int(op) % count
                // Even heads only: a chain takes its head's slot and the next, so chains never share one.
                guard let head = stride(from: 0, to: ringSize, by: 2).first(where: { outstanding[q][$0] == nil }) else {
                    // A device that holds buffers (sound's playback, input's events) filled the ring: start over.
                    device.reset()
                    for i in 0..<count {
                        queues.queues[i] = makeQueue(i, device)
                        outstanding[i] = [:]
                        availIndex[i] = 0
                        usedSeen[i] = 0
                    }
                    continue
                }
                let request = reader.take(Int(reader.u16()) % 2048)
                let writable = UInt32(reader.u16()) % 4097
                let r = ring(q)
                var slot = 0
                if !request.isEmpty {
                    guest.put(request, at: readableAt(q, head))
                    put(descriptor: head, table: r.table, address: readableAt(q, head), length: UInt32(request.count),
                        flags: writable > 0 ? 1 : 0, next: UInt16(head + 1))
                    slot = 1
                }
                if writable > 0 || request.isEmpty {
                    // The second descriptor of a chain uses the slot after its head; heads are spaced by two.
                    let index = slot == 0 ? head : head + 1
                    put(descriptor: index, table: r.table, address: writableAt(q, head), length: writable, flags: 2, next: 0)
                }
                outstanding[q][head] = writable
                guest.put(UInt16(head), at: r.avail + 4 + 2 * UInt64(availIndex[q] % UInt16(ringSize)))
                availIndex[q] &+= 1
                guest.put(availIndex[q], at: r.avail + 2)
                device.queueNotified(q)
            case 2:  // guest pages a request may point at
                let page = UInt64(op & 0x3F) * 0x1000
                guest.put(reader.take(Int(reader.u8()) * 16), at: backing + page)
            default:
                if op & 1 == 0, let sound = device as? VirtioSoundDevice {
                    now += UInt64(reader.u8())
                    sound.tick(now: now)
                } else if op & 2 == 0 {
                    _ = device.readConfig(offset: 0, count: device.configSize)
                    device.writeConfig(offset: Int(reader.u8()) % max(device.configSize, 1), bytes: reader.take(2))
                }
            }
            // Every new used entry answers an outstanding chain, within its size.
            for q in 0..<count {
                let r = ring(q)
                let usedIndex = guest.get(UInt16.self, at: r.used + 2)
                while usedSeen[q] != usedIndex {
                    let entry = r.used + 4 + 8 * UInt64(usedSeen[q] % UInt16(ringSize))
                    let id = Int(guest.get(UInt32.self, at: entry))
                    let length = guest.get(UInt32.self, at: entry + 4)
                    guard let capacity = outstanding[q][id] else {
                        fatalError("invariant broken: queue \(q) answered chain \(id), which is not outstanding")
                    }
                    require(length <= capacity, "queue \(q) wrote \(length) bytes into a \(capacity)-byte buffer")
                    outstanding[q][id] = nil
                    usedSeen[q] &+= 1
                }
            }
        }
        device.reset()
    }

    private static func put(descriptor i: Int, table: UInt64, address: UInt64, length: UInt32, flags: UInt16, next: UInt16) {
        let guest = FuzzGuest.shared
        let at = table + 16 * UInt64(i)
        guest.put(address, at: at)
        guest.put(length, at: at + 8)
        guest.put(flags, at: at + 12)
        guest.put(next, at: at + 14)
    }

    /// A fresh, empty ring for queue `q`.
    private static func makeQueue(_ q: Int, _ device: VirtioDeviceBackend) -> SplitVirtqueue {
        let r = ring(q)
        FuzzGuest.shared.zero(0x1000, at: r.table)
        return try! SplitVirtqueue(
            index: q, size: ringSize, descriptorTable: GuestAddress(r.table), availRing: GuestAddress(r.avail),
            usedRing: GuestAddress(r.used), memory: FuzzGuest.shared.memory, eventIndex: false,
            indirectDescriptors: false, maxChainBytes: device.maxChainBytes)
    }
}
