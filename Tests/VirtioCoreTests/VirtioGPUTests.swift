import Testing
@testable import VirtioCore
@testable import VirtioGPU

/// The transport side for one device in tests: its queues are rings the test lays out.
final class TestQueues: VirtioQueueAccess {
    var queues: [Int: SplitVirtqueue] = [:]
    var notified: [Int] = []
    func queue(_ index: Int) -> SplitVirtqueue? { queues[index].flatMap { $0.broken == nil ? $0 : nil } }
    func isEnabled(_ index: Int) -> Bool { queues[index] != nil }
    func notify(_ index: Int) { notified.append(index) }
}

final class RecordingSink: VirtioGPUDisplaySink {
    var sizes: [(Int, Int)] = []
    var updates: [(damage: [GPURect], width: Int, height: Int, pixels: [UInt32])] = []
    var cursor: (width: Int, height: Int, hotX: Int, hotY: Int, argb: [UInt32], x: Int, y: Int)?
    var moves: [(Int, Int)] = []
    var hidden = 0

    func scanoutChanged(width: Int, height: Int) { sizes.append((width, height)) }
    func scanoutUpdated(damage: [GPURect], pixels: UnsafeRawPointer, width: Int, height: Int, stride: Int) {
        // Copy the whole scanout, row by row (stride may exceed width * 4).
        var all: [UInt32] = []
        for y in 0..<height {
            let row = (pixels + y * stride).assumingMemoryBound(to: UInt32.self)
            all += UnsafeBufferPointer(start: row, count: width)
        }
        updates.append((damage, width, height, all))
    }
    func cursorDefined(width: Int, height: Int, hotX: Int, hotY: Int, argb: [UInt32], x: Int, y: Int) {
        cursor = (width, height, hotX, hotY, argb, x, y)
    }
    func cursorMoved(x: Int, y: Int) { moves.append((x, y)) }
    func cursorHidden() { hidden += 1 }
}

/// A guest driver of the test's making: requests through a real split ring in shared memory.
final class TestGPUDriver {
    static let request: UInt64 = 0x3_0000
    static let entries: UInt64 = 0x3_8000
    static let response: UInt64 = 0x4_0000
    static let backing: UInt64 = 0x10_0000  // region 1
    let guest: TestGuest
    let ring: TestRing
    let cursorRing: TestRing
    let queues = TestQueues()
    let device: VirtioGPUDevice
    let sink = RecordingSink()
    private var avail: UInt16 = 0
    private var cursorAvail: UInt16 = 0

    init(maxHostBytes: Int = VirtioGPUDevice.defaultMaxHostBytes) throws {
        guest = try TestGuest()
        ring = TestRing(size: 16, guest: guest)
        cursorRing = TestRing(size: 16, guest: guest)
        queues.queues[0] = try ring.makeQueue()
        // The cursor ring sits 0x2_8000 above the control ring's parts.
        queues.queues[1] = try SplitVirtqueue(index: 1, size: 16, descriptorTable: GuestAddress(0x5_0000),
                                              availRing: GuestAddress(0x5_1000), usedRing: GuestAddress(0x5_2000),
                                              memory: guest.memory, eventIndex: false, indirectDescriptors: false)
        device = VirtioGPUDevice(maxHostBytes: maxHostBytes)
        device.attach(queues)
        device.sink = sink
    }

    static func header(_ type: UInt32, flags: UInt32 = 0, fence: UInt64 = 0) -> [UInt8] {
        var h = [UInt8](repeating: 0, count: 24)
        h.putU32(type, at: 0)
        h.putU32(flags, at: 4)
        h.putU64(fence, at: 8)
        return h
    }

    static func u32s(_ values: [UInt32]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 4 * values.count)
        for (i, v) in values.enumerated() { out.putU32(v, at: 4 * i) }
        return out
    }

    /// Sends one request (optionally with a second readable buffer) and returns the response.
    func send(_ request: [UInt8], extra: [UInt8]? = nil, responseSize: Int = 24) -> [UInt8] {
        guest.putBytes(request, at: Self.request)
        var d = 0
        ring.descriptor(d, addr: Self.request, len: UInt32(request.count), flags: 1, next: UInt16(d + 1))
        d += 1
        if let extra {
            guest.putBytes(extra, at: Self.entries)
            ring.descriptor(d, addr: Self.entries, len: UInt32(extra.count), flags: 1, next: UInt16(d + 1))
            d += 1
        }
        ring.descriptor(d, addr: Self.response, len: UInt32(responseSize), flags: 2, next: 0)
        guest.putBytes([UInt8](repeating: 0xEE, count: responseSize), at: Self.response)
        ring.setAvail(slot: Int(avail), head: 0)
        avail &+= 1
        ring.setAvailIndex(avail)
        device.queueNotified(VirtioGPUDevice.controlQueue)
        let used = ring.usedEntry(Int(avail) - 1)
        return guest.getBytes(at: Self.response, count: Int(used.len))
    }

    func cursor(_ type: UInt32, x: Int32, y: Int32, resource: UInt32 = 0, hotX: UInt32 = 0, hotY: UInt32 = 0) {
        let cmd = Self.header(type) + Self.u32s([0, UInt32(bitPattern: x), UInt32(bitPattern: y), 0, resource, hotX, hotY, 0])
        guest.putBytes(cmd, at: 0x5_8000)
        guest.put(UInt64(0x5_8000), at: 0x5_0000)
        guest.put(UInt32(cmd.count), at: 0x5_0008)
        guest.put(UInt16(0), at: 0x5_000c)
        guest.put(UInt16(0), at: 0x5_1004 + 2 * UInt64(cursorAvail % 16))
        cursorAvail &+= 1
        guest.put(cursorAvail, at: 0x5_1002)
        device.queueNotified(VirtioGPUDevice.cursorQueue)
    }

    static func code(_ response: [UInt8]) -> UInt32 { response.count >= 4 ? WireReader(bytes: response).u32(0) : 0 }

    func create(_ id: UInt32, format: UInt32 = 2, width: UInt32, height: UInt32) -> UInt32 {
        Self.code(send(Self.header(VirtioGPU.Command.resourceCreate2D) + Self.u32s([id, format, width, height])))
    }

    func attach(_ id: UInt32, _ entries: [(UInt64, UInt32)]) -> UInt32 {
        var e: [UInt8] = []
        for (a, l) in entries {
            var x = [UInt8](repeating: 0, count: 16)
            x.putU64(a, at: 0)
            x.putU32(l, at: 8)
            e += x
        }
        return Self.code(send(Self.header(VirtioGPU.Command.resourceAttachBacking) + Self.u32s([id, UInt32(entries.count)]),
                              extra: e))
    }

    func transfer(_ id: UInt32, x: UInt32, y: UInt32, w: UInt32, h: UInt32, offset: UInt64) -> UInt32 {
        var off = [UInt8](repeating: 0, count: 8)
        off.putU64(offset, at: 0)
        return Self.code(send(Self.header(VirtioGPU.Command.transferToHost2D) + Self.u32s([x, y, w, h]) + off
                              + Self.u32s([id, 0])))
    }

    func setScanout(_ id: UInt32, scanout: UInt32 = 0, x: UInt32 = 0, y: UInt32 = 0, w: UInt32, h: UInt32) -> UInt32 {
        Self.code(send(Self.header(VirtioGPU.Command.setScanout) + Self.u32s([x, y, w, h, scanout, id])))
    }

    func flush(_ id: UInt32, x: UInt32 = 0, y: UInt32 = 0, w: UInt32, h: UInt32) -> UInt32 {
        Self.code(send(Self.header(VirtioGPU.Command.resourceFlush) + Self.u32s([x, y, w, h, id, 0])))
    }
}

@Suite struct VirtioGPUTests {
    typealias R = VirtioGPU.Response

    /// The pixel the test paints at (x, y): distinct per position.
    static func pattern(_ x: Int, _ y: Int) -> UInt32 { 0x00_00_00_00 | UInt32(x & 0xff) << 16 | UInt32(y & 0xff) << 8 | 0x5A }

    @Test func displayInfoReportsOneScanoutAndEchoesTheFence() throws {
        let d = try TestGPUDriver()
        let r = d.send(TestGPUDriver.header(VirtioGPU.Command.getDisplayInfo, flags: 1, fence: 0x1234_5678_9abc),
                       responseSize: VirtioGPU.displayInfoSize)
        let w = WireReader(bytes: r)
        #expect(r.count == VirtioGPU.displayInfoSize)
        #expect(w.u32(0) == R.okDisplayInfo)
        #expect(w.u32(4) == 1 && w.u64(8) == 0x1234_5678_9abc)
        #expect(w.rect(24) == GPURect(x: 0, y: 0, width: 1024, height: 768) && w.u32(40) == 1)
        #expect(w.u32(48 + 16) == 0)  // scanout 1 disabled
        d.device.preferredSize = (1280, 800)
        let r2 = WireReader(bytes: d.send(TestGPUDriver.header(VirtioGPU.Command.getDisplayInfo),
                                          responseSize: VirtioGPU.displayInfoSize))
        #expect(r2.rect(24) == GPURect(x: 0, y: 0, width: 1280, height: 800))
        #expect(d.device.readConfig(offset: 0, count: 16) == TestGPUDriver.u32s([0, 0, 1, 0]))
    }

    @Test func edidDescribesThePreferredMode() throws {
        let d = try TestGPUDriver()
        d.device.preferredSize = (1280, 800)
        let r = d.send(TestGPUDriver.header(VirtioGPU.Command.getEDID) + TestGPUDriver.u32s([0, 0]),
                       responseSize: VirtioGPU.edidResponseSize)
        let w = WireReader(bytes: r)
        #expect(w.u32(0) == R.okEDID && w.u32(24) == 128)
        let e = Array(r[32..<160])
        #expect(Array(e[0..<8]) == [0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0])
        #expect(e.reduce(0) { ($0 + Int($1)) & 0xff } == 0, "checksum")
        // The first descriptor is the detailed timing of 1280x800.
        let hActive = Int(e[56]) | Int(e[58] >> 4) << 8, vActive = Int(e[59]) | Int(e[61] >> 4) << 8
        #expect(hActive == 1280 && vActive == 800)
        #expect(Int(e[54]) | Int(e[55]) << 8 > 0)
        // Too large for a detailed timing: still a valid block.
        let big = VirtioGPUEDID.block(width: 8192, height: 8192)
        #expect(big.count == 128 && big.reduce(0) { ($0 + Int($1)) & 0xff } == 0)
    }

    /// The smaller common modes ride along, so a guest console whose framebuffer
    /// cannot grow still finds a mode after the window grows.
    @Test func edidListsTheSmallerCommonModes() {
        /// "WIDTH/ASPECT" of each used standard timing slot.
        func standardTimings(_ e: [UInt8]) -> [String] {
            var out: [String] = []
            for i in stride(from: 38, to: 54, by: 2) where !(e[i] == 1 && e[i + 1] == 1) {
                let width = (Int(e[i]) + 31) * 8
                out.append("\(width)/\(e[i + 1] >> 6)")
            }
            return out
        }
        let e = VirtioGPUEDID.block(width: 1280, height: 800)
        #expect(e[35] == 0x21 && e[36] == 0x08, "640x480, 800x600 and 1024x768 established")
        // 1280x720 (16:9) and 1152x864? No: 864 > 800. 1280x800 is the preferred mode itself.
        #expect(standardTimings(e) == ["1280/3"])
        let small = VirtioGPUEDID.block(width: 800, height: 600)
        #expect(small[35] == 0x20 && small[36] == 0 && standardTimings(small).isEmpty)
        let wide = VirtioGPUEDID.block(width: 2560, height: 1600)
        #expect(standardTimings(wide).count == 8 && standardTimings(wide).first == "1920/0")
        for block in [e, small, wide] { #expect(block.reduce(0) { ($0 + Int($1)) & 0xff } == 0) }
    }

    /// A 64x32 resource whose backing is two scatter-gather entries in different places.
    func paintedResource(_ d: TestGPUDriver, format: UInt32 = 2) -> (w: Int, h: Int) {
        let w = 64, h = 32
        #expect(d.create(7, format: format, width: UInt32(w), height: UInt32(h)) == R.okNoData)
        // 8 KiB of pixels: the first 3 KiB at backing, the rest 64 KiB further on.
        let a = TestGPUDriver.backing, b = TestGPUDriver.backing + 0x1_0000
        #expect(d.attach(7, [(a, 3072), (b, 8192 - 3072)]) == R.okNoData)
        for y in 0..<h {
            for x in 0..<w {
                let offset = UInt64((y * w + x) * 4)
                let at = offset < 3072 ? a + offset : b + offset - 3072
                d.guest.put(Self.pattern(x, y), at: at)
            }
        }
        return (w, h)
    }

    @Test func transferScanoutFlushDeliversThePixels() throws {
        let d = try TestGPUDriver()
        let (w, h) = paintedResource(d)
        #expect(d.transfer(7, x: 0, y: 0, w: UInt32(w), h: UInt32(h), offset: 0) == R.okNoData)
        #expect(d.setScanout(7, w: UInt32(w), h: UInt32(h)) == R.okNoData)
        #expect(d.sink.sizes.count == 1 && d.sink.sizes[0] == (w, h))
        // SET_SCANOUT shows the whole image at once.
        let last = try #require(d.sink.updates.last)
        #expect(last.damage == [GPURect(x: 0, y: 0, width: 64, height: 32)])
        for (x, y) in [(0, 0), (63, 0), (5, 10), (63, 31), (17, 23)] {
            #expect(last.pixels[y * w + x] == Self.pattern(x, y), "pixel \(x),\(y)")
        }
        // A flush with nothing changed since shows nothing; so does a transfer of the same pixels.
        #expect(d.flush(7, x: 3, y: 4, w: 10, h: 5) == R.okNoData)
        #expect(d.transfer(7, x: 0, y: 0, w: UInt32(w), h: UInt32(h), offset: 0) == R.okNoData)
        #expect(d.flush(7, w: UInt32(w), h: UInt32(h)) == R.okNoData)
        #expect(d.sink.updates.count == 1)
        // A partial transfer: only the rectangle changes.
        for y in 0..<h { for x in 0..<w { d.guest.put(UInt32(0xFFFFFF), at: TestGPUDriver.backing + UInt64((y * w + x) * 4) + (UInt64((y * w + x) * 4) < 3072 ? 0 : 0x1_0000 - 3072)) } }
        #expect(d.transfer(7, x: 8, y: 2, w: 4, h: 3, offset: UInt64((2 * w + 8) * 4)) == R.okNoData)
        #expect(d.flush(7, w: UInt32(w), h: UInt32(h)) == R.okNoData)
        #expect(d.sink.updates.count == 2)
        // Only the pixels that changed, although the guest flushed the whole resource.
        #expect(try #require(d.sink.updates.last).damage == [GPURect(x: 8, y: 2, width: 4, height: 3)])
        let after = try #require(d.sink.updates.last).pixels
        #expect(after[3 * w + 9] == 0xFFFFFF)
        #expect(after[3 * w + 12] == Self.pattern(12, 3))
        #expect(after[1 * w + 9] == Self.pattern(9, 1))
        // A scanout rectangle inside a bigger resource.
        #expect(d.setScanout(7, x: 16, y: 8, w: 32, h: 16) == R.okNoData)
        #expect(d.sink.sizes.last! == (32, 16))
        #expect(try #require(d.sink.updates.last).pixels[0] == Self.pattern(16, 8))
    }

    @Test func otherFormatsArriveAsBGRX() throws {
        let d = try TestGPUDriver()
        let (w, h) = paintedResource(d, format: 67)  // R8G8B8A8: bytes R,G,B,A
        #expect(d.transfer(7, x: 0, y: 0, w: UInt32(w), h: UInt32(h), offset: 0) == R.okNoData)
        #expect(d.setScanout(7, w: UInt32(w), h: UInt32(h)) == R.okNoData)
        let px = try #require(d.sink.updates.last).pixels[0]
        // pattern(0,0) = 0x0000005A: bytes 5A,00,00,00 read as R=5A,G=0,B=0 -> BGRX 00,00,5A,00 = 0x005A0000.
        #expect(px == 0x005A_0000)
    }

    @Test func hostileRequestsGetErrorsAndChangeNothing() throws {
        let d = try TestGPUDriver(maxHostBytes: 1 << 20)
        let (w, h) = paintedResource(d)
        // Names that do not exist.
        #expect(d.transfer(99, x: 0, y: 0, w: 1, h: 1, offset: 0) == R.errInvalidResourceID)
        #expect(d.flush(99, w: 1, h: 1) == R.errInvalidResourceID)
        #expect(d.setScanout(99, w: 1, h: 1) == R.errInvalidResourceID)
        #expect(d.setScanout(7, scanout: 1, w: 1, h: 1) == R.errInvalidScanoutID)
        #expect(d.create(0, width: 8, height: 8) == R.errInvalidResourceID)
        #expect(d.create(7, width: 8, height: 8) == R.errInvalidResourceID)  // exists
        // Rectangles outside the resource, offsets past (or wrapping around) the backing.
        #expect(d.transfer(7, x: 60, y: 0, w: 5, h: 1, offset: 0) == R.errInvalidParameter)
        #expect(d.transfer(7, x: 0, y: 0, w: 1, h: 33, offset: 0) == R.errInvalidParameter)
        #expect(d.transfer(7, x: UInt32.max, y: 0, w: 2, h: 1, offset: 0) == R.errInvalidParameter)
        #expect(d.transfer(7, x: 0, y: 0, w: 64, h: 32, offset: 4) == R.errInvalidParameter)
        #expect(d.transfer(7, x: 0, y: 0, w: 1, h: 1, offset: UInt64.max - 2) == R.errInvalidParameter)
        #expect(d.flush(7, x: 0, y: 30, w: 64, h: 3) == R.errInvalidParameter)
        #expect(d.setScanout(7, x: 1, w: 64, h: 32) == R.errInvalidParameter)
        // Bad formats and sizes; the host memory cap (1 MiB here).
        #expect(d.create(8, format: 5, width: 8, height: 8) == R.errInvalidParameter)
        #expect(d.create(8, width: 16385, height: 1) == R.errInvalidParameter)
        #expect(d.create(8, width: 1024, height: 1024) == R.errOutOfMemory)
        #expect(d.create(8, width: 256, height: 256) == R.okNoData)
        #expect(d.create(10, width: 256, height: 512) == R.okNoData)
        #expect(d.create(9, width: 512, height: 256) == R.errOutOfMemory)  // 8 KiB + 256 KiB + 512 KiB + this > 1 MiB
        // Backing outside guest memory, too many entries, twice, and missing.
        #expect(d.attach(8, [(0x8000_0000, 4096)]) == R.errInvalidParameter)
        #expect(d.attach(8, [(TestGuest.regionSize - 16, 4096)]) == R.errInvalidParameter)  // runs off region 0
        #expect(d.attach(7, [(TestGPUDriver.backing, 4096)]) == R.errUnspec)  // already attached
        #expect(d.transfer(8, x: 0, y: 0, w: 1, h: 1, offset: 0) == R.errInvalidResourceID)  // no backing
        let tooMany = TestGPUDriver.header(VirtioGPU.Command.resourceAttachBacking) + TestGPUDriver.u32s([8, 1 << 20])
        #expect(TestGPUDriver.code(d.send(tooMany)) == R.errInvalidParameter)
        let claimsMore = TestGPUDriver.header(VirtioGPU.Command.resourceAttachBacking) + TestGPUDriver.u32s([8, 3])
        #expect(TestGPUDriver.code(d.send(claimsMore, extra: [UInt8](repeating: 0, count: 16))) == R.errInvalidParameter)
        // Short, unknown and 3D commands.
        #expect(TestGPUDriver.code(d.send(Array(TestGPUDriver.header(VirtioGPU.Command.resourceFlush)[0..<20]))) == R.errUnspec)
        #expect(TestGPUDriver.code(d.send(TestGPUDriver.header(VirtioGPU.Command.resourceFlush))) == R.errUnspec)
        #expect(TestGPUDriver.code(d.send(TestGPUDriver.header(0x0207))) == R.errUnspec)
        #expect(TestGPUDriver.code(d.send(TestGPUDriver.header(VirtioGPU.Command.getEDID) + TestGPUDriver.u32s([1, 0]))) == R.errInvalidScanoutID)
        // Nothing above reached the display, and the device still works.
        #expect(d.sink.updates.isEmpty && d.sink.sizes.isEmpty)
        #expect(d.transfer(7, x: 0, y: 0, w: UInt32(w), h: UInt32(h), offset: 0) == R.okNoData)
        #expect(d.setScanout(7, w: UInt32(w), h: UInt32(h)) == R.okNoData)
        #expect(try #require(d.sink.updates.last).pixels[31 * w + 63] == Self.pattern(63, 31))
        // Unref frees the budget and unbinds the scanout.
        #expect(TestGPUDriver.code(d.send(TestGPUDriver.header(VirtioGPU.Command.resourceUnref) + TestGPUDriver.u32s([8, 0]))) == R.okNoData)
        #expect(TestGPUDriver.code(d.send(TestGPUDriver.header(VirtioGPU.Command.resourceUnref) + TestGPUDriver.u32s([10, 0]))) == R.okNoData)
        #expect(TestGPUDriver.code(d.send(TestGPUDriver.header(VirtioGPU.Command.resourceUnref) + TestGPUDriver.u32s([7, 0]))) == R.okNoData)
        #expect(d.sink.sizes.last! == (0, 0))
        #expect(d.device.stats.hostBytes == 0 && d.device.stats.resources == 0)
        #expect(d.device.stats.errors >= 25)
    }

    @Test func cursorQueueDefinesMovesAndHides() throws {
        let d = try TestGPUDriver()
        #expect(d.create(5, format: 1, width: 64, height: 64) == R.okNoData)
        #expect(d.attach(5, [(TestGPUDriver.backing, 64 * 64 * 4)]) == R.okNoData)
        d.guest.put(UInt32(0x80FF_0000), at: TestGPUDriver.backing + 4 * (2 * 64 + 3))
        #expect(d.transfer(5, x: 0, y: 0, w: 64, h: 64, offset: 0) == R.okNoData)
        d.cursor(VirtioGPU.Command.updateCursor, x: -3, y: 40, resource: 5, hotX: 3, hotY: 2)
        let c = try #require(d.sink.cursor)
        #expect(c.width == 64 && c.hotX == 3 && c.hotY == 2 && c.x == -3 && c.y == 40)
        #expect(c.argb[2 * 64 + 3] == 0x80FF_0000)
        d.cursor(VirtioGPU.Command.moveCursor, x: 100, y: 200)
        #expect(d.sink.moves.last! == (100, 200))
        d.cursor(VirtioGPU.Command.updateCursor, x: 0, y: 0, resource: 0)
        #expect(d.sink.hidden == 1)
        d.cursor(VirtioGPU.Command.updateCursor, x: 0, y: 0, resource: 77)  // no such resource: ignored
        #expect(d.sink.hidden == 1)
    }
}
