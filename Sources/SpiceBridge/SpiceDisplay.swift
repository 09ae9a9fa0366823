import CSpiceServer
import LinuxSystem
#if canImport(Glibc)
import Glibc
#endif

/// A rectangle in primary-surface pixels.
public struct SpiceRect: Sendable, Equatable, CustomStringConvertible {
    public var x: Int
    public var y: Int
    public var width: Int
    public var height: Int

    public init(x: Int, y: Int, width: Int, height: Int) {
        self.x = x
        self.y = y
        self.width = width
        self.height = height
    }

    public var isEmpty: Bool { width <= 0 || height <= 0 }
    public var area: Int { isEmpty ? 0 : width * height }
    public var description: String { "\(width)x\(height)+\(x)+\(y)" }

    /// The part inside [0, width) x [0, height).
    public func clipped(width w: Int, height h: Int) -> SpiceRect {
        let x0 = max(0, x), y0 = max(0, y)
        let x1 = min(w, x &+ max(0, width)), y1 = min(h, y &+ max(0, height))
        return SpiceRect(x: x0, y: y0, width: max(0, x1 - x0), height: max(0, y1 - y0))
    }

    /// The bounding box of both.
    public func union(_ o: SpiceRect) -> SpiceRect {
        if isEmpty { return o }
        if o.isEmpty { return self }
        let x0 = min(x, o.x), y0 = min(y, o.y)
        let x1 = max(x + width, o.x + o.width), y1 = max(y + height, o.y + o.height)
        return SpiceRect(x: x0, y: y0, width: x1 - x0, height: y1 - y0)
    }
}

/// The producer's framebuffer: 32-bit xRGB little-endian (bytes B, G, R, X in
/// memory: DRM_FORMAT_XRGB8888, virtio-gpu B8G8R8X8_UNORM). SpiceDisplay copies
/// the damaged pixels during the call; the memory may change right after.
public struct SpiceFramebuffer {
    public var pixels: UnsafeRawPointer
    public var width: Int
    public var height: Int
    /// Bytes from one row to the next (at least width * 4).
    public var stride: Int

    public init(pixels: UnsafeRawPointer, width: Int, height: Int, stride: Int) {
        self.pixels = pixels
        self.width = width
        self.height = height
        self.stride = stride
    }
}

/// One monitor of a client's monitors config (a client window resized, spice.md §4.7).
public struct SpiceMonitorConfig: Sendable, Equatable {
    public var x: Int32
    public var y: Int32
    public var width: UInt32
    public var height: UInt32
    public var depth: UInt32
}

/// A "simple display" (spice.md §4): a QXL interface without a QXL device, as
/// QEMU's "qemu simple display". The producer (the virtio-gpu backend) owns
/// the framebuffer and reports damage; each damaged rectangle becomes one
/// QXL_DRAW_COPY drawable pointing at a private copy of its pixels, queued for
/// spice's worker thread, which fetches it with get_command and gives it back
/// with release_resource.
///
/// Threading (spice.md §3):
/// - `init`, `resize`, `close` on the spice loop thread: `add_interface` must
///   be, and the sync primary-surface calls update the server's mouse mode,
///   which the main channel (loop thread) owns.
/// - `update`, `flush`, the cursor calls: any thread except spice's worker
///   (never from a SpiceDisplay callback). They only queue under `state.lock`
///   and call `spice_qxl_wakeup`, which is thread-safe.
/// - The worker thread calls get_command, req_cmd_notification,
///   release_resource and the cursor pair; they take only `state.lock`.
///   No libspice call is made while `state.lock` is held, so the worker and a
///   producer blocked in a sync call can never wait on each other.
/// - `onClientMonitorsConfig` runs on the loop thread.
public final class SpiceDisplay: @unchecked Sendable {
    /// Damage lists longer than this become one bounding rectangle.
    public static let maxRectsPerFlush = 16
    /// Unfetched drawables are bounded by count and bytes (see `queue`); past
    /// either bound the whole queue is replaced by one bounding-box copy.
    public static let maxQueuedDrawables = 64
    public static let maxCursorSize = 256

    public struct Stats: Sendable {
        /// Drawables created (one per rectangle, after merging).
        public var drawables = 0
        /// Fetched by the worker.
        public var fetched = 0
        /// Given back by release_resource.
        public var released = 0
        /// Times the unfetched queue was replaced by one bounding-box update.
        public var coalesced = 0
        /// Unfetched now, and their pixel bytes.
        public var queued = 0
        public var queuedBytes = 0
        /// Allocated and not yet released (queued + held by the server).
        public var outstanding = 0
        public var outstandingBytes = 0
        public var pixelBytesCopied = 0
        public var cursorCommands = 0
        public var monitorsConfigs = 0
    }

    private let state: DisplayState
    private weak var server: SpiceServer?
    /// Serialises the producer's calls (update/resize/cursor), never taken by the worker.
    private let producerLock = Monitor()

    public private(set) var width: Int
    public private(set) var height: Int

    /// A client asked for a new screen layout (its window was resized): the
    /// producer should send a virtio-gpu display change. Loop thread. Only
    /// delivered while a vdagent is attached: spice-gtk sends monitors configs
    /// through the agent channel, and the server hands them to the QXL
    /// interface instead of the agent (spice.md §4.7).
    public var onClientMonitorsConfig: (([SpiceMonitorConfig]) -> Void)? {
        get { state.lock.withLock { state.monitorsHandler } }
        set { state.lock.withLock { state.monitorsHandler = newValue } }
    }

    /// Registers the display with `server` (loop thread) and creates a black
    /// primary surface of `width` x `height`.
    public init(server: SpiceServer, width: Int = 640, height: Int = 480) throws(SpiceError) {
        precondition(onSpiceLoopThread(), "SpiceDisplay.init must run on the spice loop thread")
        guard Self.validSize(width, height) else { throw SpiceError("invalid display size \(width)x\(height)") }
        self.width = width
        self.height = height
        self.server = server
        state = DisplayState()
        // Order (spice.md §1.5-6): add_interface (creates the worker, which calls
        // get_init_info here), then the memslot, then the primary surface.
        spice_server_add_interface(server.server, &state.instance.pointee.base)
        var slot = QXLDevMemSlot()
        // One memslot covering the whole address space: QXLPHYSICAL = host pointer (§4.1).
        slot.slot_group_id = 0
        slot.slot_id = 0
        slot.generation = 0
        slot.virt_start = 0
        slot.virt_end = UInt.max
        slot.addr_delta = 0
        spice_qxl_add_memslot(state.instance, &slot)
        createPrimary()
        server.devices.append(self)
    }

    static func validSize(_ w: Int, _ h: Int) -> Bool { w > 0 && h > 0 && w <= 16384 && h <= 16384 }

    /// The primary's scratch memory (the server renders into it; not the producer's framebuffer).
    private func createPrimary() {
        let bytes = width * height * 4
        state.primary = calloc(1, bytes)!
        var surface = QXLDevSurfaceCreate()
        surface.width = UInt32(width)
        surface.height = UInt32(height)
        surface.stride = -Int32(width * 4)  // bottom-up, as QEMU and the server's own tests
        surface.format = SPICE_SURFACE_FMT_32_xRGB.rawValue
        surface.position = 0
        surface.mouse_mode = 1  // lets client mouse mode be offered (§4.2)
        surface.flags = 0
        surface.type = 0
        surface.mem = UInt64(UInt(bitPattern: state.primary))
        surface.group_id = 0
        spice_qxl_create_primary_surface(state.instance, 0, &surface)
    }

    /// Destroys and recreates the primary surface at the new size (spice.md §4.5),
    /// black until the next flush. Loop thread. Same size: nothing to do.
    public func resize(width: Int, height: Int) throws(SpiceError) {
        precondition(onSpiceLoopThread(), "SpiceDisplay.resize must run on the spice loop thread")
        guard Self.validSize(width, height) else { throw SpiceError("invalid display size \(width)x\(height)") }
        producerLock.lock()
        defer { producerLock.unlock() }
        guard server != nil, !state.closed else { return }
        guard width != self.width || height != self.height else { return }
        // Unfetched updates belong to the old surface: drop them first, under the lock.
        state.dropQueuedDrawables()
        // Outside state.lock: the worker may call release_resource while we wait.
        spice_qxl_destroy_primary_surface(state.instance, 0)
        free(state.primary)
        self.width = width
        self.height = height
        createPrimary()
        // A surface switch resets the cursor: define it again.
        if state.requeueCursor() { spice_qxl_wakeup(state.instance) }
    }

    /// One damaged rectangle of `framebuffer`. See `flush`.
    public func update(rect: SpiceRect, from framebuffer: SpiceFramebuffer) {
        flush(damage: [rect], from: framebuffer)
    }

    /// Copies the damaged parts of `framebuffer` and queues them for the
    /// clients. Rectangles are clipped to the surface (and the framebuffer),
    /// overlapping ones merged, and more than `maxRectsPerFlush` become their
    /// bounding box. If the unfetched queue would pass its bounds (a slow or
    /// stopped consumer), everything unfetched is replaced by one copy of the
    /// bounding box of old and new damage, taken from this framebuffer, which
    /// holds the newest pixels for all of it.
    public func flush(damage: [SpiceRect], from framebuffer: SpiceFramebuffer) {
        producerLock.lock()
        defer { producerLock.unlock() }
        guard server != nil, !state.closed else { return }
        let w = min(width, framebuffer.width), h = min(height, framebuffer.height)
        guard framebuffer.stride >= framebuffer.width * 4 else { return }
        var rects = Self.mergeDamage(damage, width: w, height: h, maxRects: Self.maxRectsPerFlush)
        guard !rects.isEmpty else { return }
        let newBytes = rects.reduce(0) { $0 + $1.area * 4 }
        let frameBytes = width * height * 4
        // Past the bounds: take the unfetched drawables back and cover them with one rectangle.
        if let dropped = state.takeQueueIfOver(adding: rects.count, bytes: newBytes,
                                                maxCount: Self.maxQueuedDrawables, maxBytes: 2 * frameBytes)
        {
            let box = (dropped + rects).reduce(SpiceRect(x: 0, y: 0, width: 0, height: 0)) { $0.union($1) }
            rects = [box.clipped(width: w, height: h)]
        }
        let blocks = rects.map { makeDrawable(rect: $0, from: framebuffer) }
        state.enqueue(blocks)
        spice_qxl_wakeup(state.instance)
    }

    /// Clip, drop empties, merge pairs whose bounding box costs no more pixels
    /// than the two apart (overlapping or adjoining), and fall back to one
    /// bounding box past `maxRects`.
    static func mergeDamage(_ damage: [SpiceRect], width: Int, height: Int, maxRects: Int) -> [SpiceRect] {
        var rects = damage.map { $0.clipped(width: width, height: height) }.filter { !$0.isEmpty }
        if rects.count > 4 * maxRects {  // not worth merging pairwise
            return [rects.reduce(rects[0]) { $0.union($1) }]
        }
        var merged = true
        while merged && rects.count > 1 {
            merged = false
            search: for i in 0..<rects.count {
                for j in (i + 1)..<rects.count {
                    let u = rects[i].union(rects[j])
                    if u.area <= rects[i].area + rects[j].area {
                        rects[i] = u
                        rects.remove(at: j)
                        merged = true
                        break search
                    }
                }
            }
        }
        if rects.count > maxRects { return [rects.reduce(rects[0]) { $0.union($1) }] }
        return rects
    }

    /// One block: [header | QXLDrawable | QXLImage | pixels]. release_info.id is
    /// the block's address; release_resource frees it (spice.md §4.3-4.4).
    private func makeDrawable(rect: SpiceRect, from fb: SpiceFramebuffer) -> DisplayState.Block {
        let rowBytes = rect.width * 4
        let pixelBytes = rowBytes * rect.height
        let drawableAt = BlockLayout.header
        let imageAt = (drawableAt + MemoryLayout<QXLDrawable>.size + 15) & ~15
        let pixelsAt = (imageAt + MemoryLayout<QXLImage>.size + 63) & ~63
        let size = pixelsAt + pixelBytes
        let block = malloc(size)!
        BlockLayout.writeHeader(block, bytes: pixelBytes)
        let pixels = block + pixelsAt
        var src = fb.pixels + rect.y * fb.stride + rect.x * 4
        var dst = pixels
        for _ in 0..<rect.height {
            memcpy(dst, src, rowBytes)
            src += fb.stride
            dst += rowBytes
        }

        let image = (block + imageAt).bindMemory(to: QXLImage.self, capacity: 1)
        image.initialize(to: QXLImage())
        image.pointee.descriptor.id = (state.nextImageUnique() << 32) | UInt64(QXL_IMAGE_GROUP_DEVICE)
        image.pointee.descriptor.type = UInt8(SPICE_IMAGE_TYPE_BITMAP.rawValue)
        image.pointee.descriptor.flags = 0  // not cached: every copy is new pixels
        image.pointee.descriptor.width = UInt32(rect.width)
        image.pointee.descriptor.height = UInt32(rect.height)
        image.pointee.bitmap.format = UInt8(SPICE_BITMAP_FMT_32BIT.rawValue)
        // DIRECT: data points at the rows themselves, not at a QXLDataChunk.
        image.pointee.bitmap.flags = UInt8(QXL_BITMAP_DIRECT.rawValue | QXL_BITMAP_TOP_DOWN.rawValue)
        image.pointee.bitmap.x = UInt32(rect.width)
        image.pointee.bitmap.y = UInt32(rect.height)
        image.pointee.bitmap.stride = UInt32(rowBytes)
        image.pointee.bitmap.palette = 0
        image.pointee.bitmap.data = BlockLayout.physical(pixels)

        let d = (block + drawableAt).bindMemory(to: QXLDrawable.self, capacity: 1)
        d.initialize(to: QXLDrawable())
        d.pointee.release_info.id = BlockLayout.physical(block)
        d.pointee.surface_id = 0
        d.pointee.effect = UInt8(QXL_EFFECT_OPAQUE.rawValue)
        d.pointee.type = UInt8(QXL_DRAW_COPY)
        d.pointee.self_bitmap = 0
        d.pointee.bbox = QXLRect(top: Int32(rect.y), left: Int32(rect.x),
                                 bottom: Int32(rect.y + rect.height), right: Int32(rect.x + rect.width))
        d.pointee.clip.type = UInt32(SPICE_CLIP_TYPE_NONE.rawValue)
        d.pointee.clip.data = 0
        d.pointee.mm_time = UInt32(truncatingIfNeeded: EventLoop.now())
        d.pointee.surfaces_dest = (-1, -1, -1)
        d.pointee.u.copy.src_bitmap = BlockLayout.physical(UnsafeMutableRawPointer(image))
        d.pointee.u.copy.src_area = QXLRect(top: 0, left: 0, bottom: Int32(rect.height), right: Int32(rect.width))
        d.pointee.u.copy.rop_descriptor = UInt16(SPICE_ROPD_OP_PUT.rawValue)
        d.pointee.u.copy.scale_mode = 0
        return DisplayState.Block(address: UInt(bitPattern: block), command: UInt64(UInt(bitPattern: d)),
                                  type: QXL_CMD_DRAW.rawValue, rect: rect, bytes: pixelBytes)
    }

    // MARK: - Cursor (spice.md §4.6)

    /// Defines the pointer shape and shows it: `argb` is width*height 32-bit
    /// ARGB pixels (premultiplied as virtio-gpu's, bytes B, G, R, A), row by
    /// row; (`x`, `y`) is the image's top-left corner on the surface, as
    /// virtio-gpu reports cursor positions; the hot spot is added here because
    /// SPICE positions are the hot spot's.
    public func setCursor(width: Int, height: Int, hotX: Int, hotY: Int, argb: [UInt32], x: Int, y: Int) {
        guard width > 0, height > 0, width <= Self.maxCursorSize, height <= Self.maxCursorSize,
              argb.count >= width * height, (0..<width).contains(hotX), (0..<height).contains(hotY)
        else { return }
        producerLock.lock()
        defer { producerLock.unlock() }
        guard server != nil, !state.closed else { return }
        state.setCursor(CursorShape(width: width, height: height, hotX: hotX, hotY: hotY,
                                    argb: Array(argb[0..<(width * height)])), x: x, y: y)
        spice_qxl_wakeup(state.instance)
    }

    /// Moves the pointer image's top-left corner to (`x`, `y`).
    public func moveCursor(x: Int, y: Int) {
        producerLock.lock()
        defer { producerLock.unlock() }
        guard server != nil, !state.closed else { return }
        if state.moveCursor(x: x, y: y) { spice_qxl_wakeup(state.instance) }
    }

    public func hideCursor() {
        producerLock.lock()
        defer { producerLock.unlock() }
        guard server != nil, !state.closed else { return }
        state.hideCursor()
        spice_qxl_wakeup(state.instance)
    }

    public var stats: Stats { state.lock.withLock { state.stats } }

    /// Unregisters the display (loop thread): the worker thread stops and every
    /// drawable it still held is freed. Safe to call twice.
    public func close() {
        precondition(onSpiceLoopThread(), "SpiceDisplay.close must run on the spice loop thread")
        producerLock.lock()
        defer { producerLock.unlock() }
        guard !state.closed else { return }
        state.lock.withLock { state.closed = true }
        if server != nil {
            // spice_server_remove_interface joins the worker thread (red_qxl_destroy).
            spice_server_remove_interface(&state.instance.pointee.base)
        }
        // With the worker gone nobody else touches the blocks or the primary.
        state.freeAll()
    }

    deinit {
        // The server (which destroyed our QXL instance) is gone, or close() ran.
        if !state.closed {
            state.closed = true
            state.freeAll()
        }
    }
}

struct CursorShape {
    var width: Int
    var height: Int
    var hotX: Int
    var hotY: Int
    var argb: [UInt32]
}

/// The header every allocated command block starts with: its pixel bytes, for the counters.
enum BlockLayout {
    static let header = 16

    static func writeHeader(_ block: UnsafeMutableRawPointer, bytes: Int) {
        block.storeBytes(of: UInt64(bytes), as: UInt64.self)
    }

    static func bytes(_ block: UnsafeMutableRawPointer) -> Int { Int(block.load(as: UInt64.self)) }

    /// QXLPHYSICAL of a host pointer, valid through memslot 0 (top 16 bits clear on x86-64/arm64).
    static func physical(_ p: UnsafeMutableRawPointer) -> UInt64 { UInt64(UInt(bitPattern: p)) }
}

/// Everything spice's worker thread touches, behind `lock` (spice.md §9.1).
/// Its methods take `lock` themselves and never call libspice.
final class DisplayState: @unchecked Sendable {
    struct Block {
        var address: UInt
        /// QXLCommand.data: the QXLDrawable or QXLCursorCmd inside the block.
        var command: UInt64
        var type: UInt32
        var rect: SpiceRect
        var bytes: Int
        var cursorKind = -1
    }

    let lock = Monitor()
    /// The QXLInstance, with this object as its context. Set once in init.
    private(set) var instance: UnsafeMutablePointer<QXLInstance>!
    var primary: UnsafeMutableRawPointer?
    var closed = false
    var monitorsHandler: (([SpiceMonitorConfig]) -> Void)?

    private var queue: [Block] = []
    private var queuedBytes = 0
    /// Every block not yet released: address -> pixel bytes.
    private var live: [UInt: Int] = [:]
    private var cursorQueue: [Block] = []
    private var imageUnique: UInt64 = 0
    private var cursorUnique: UInt64 = 0
    private var cursor: CursorShape?
    private var cursorVisible = false
    private var cursorX = 0
    private var cursorY = 0
    var stats = SpiceDisplay.Stats()

    init() {
        var q = QXLInstance()
        q.base.sif = UnsafeRawPointer(Self.interface).assumingMemoryBound(to: SpiceBaseInterface.self)
        q.id = 0
        instance = InstanceContext.allocate(QXLInstance.self, initial: q,
                                            context: Unmanaged.passUnretained(self).toOpaque())
    }

    deinit {
        InstanceContext.deallocate(instance)
    }

    func nextImageUnique() -> UInt64 {
        lock.withLock {
            imageUnique &+= 1
            return imageUnique & 0xFFFF_FFFF
        }
    }

    // MARK: Producer side

    func enqueue(_ blocks: [Block]) {
        lock.withLock {
            for b in blocks {
                queue.append(b)
                queuedBytes += b.bytes
                live[b.address] = b.bytes
                stats.drawables += 1
                stats.pixelBytesCopied += b.bytes
            }
            refreshCounters()
        }
    }

    /// If adding `count` drawables of `bytes` would pass the bounds, removes
    /// (and frees) every unfetched drawable and returns their rectangles.
    func takeQueueIfOver(adding count: Int, bytes: Int, maxCount: Int, maxBytes: Int) -> [SpiceRect]? {
        let taken: [Block]? = lock.withLock {
            guard queue.count + count > maxCount || queuedBytes + bytes > maxBytes else { return nil }
            let old = queue
            for b in old { live[b.address] = nil }
            queue.removeAll(keepingCapacity: true)
            queuedBytes = 0
            stats.coalesced += 1
            refreshCounters()
            return old
        }
        guard let taken else { return nil }
        for b in taken { free(UnsafeMutableRawPointer(bitPattern: b.address)) }
        return taken.map(\.rect)
    }

    func dropQueuedDrawables() {
        _ = takeQueueIfOver(adding: Int.max / 2, bytes: 0, maxCount: 0, maxBytes: 0)
    }

    private func refreshCounters() {
        stats.queued = queue.count
        stats.queuedBytes = queuedBytes
        stats.outstanding = live.count
        stats.outstandingBytes = live.values.reduce(0, +)
    }

    // MARK: Cursor (producer side; spice.md §4.6)

    private static let cursorSet = 0, cursorMove = 1, cursorHide = 2

    /// One block: [header | QXLCursorCmd | QXLCursor + pixels].
    private func makeCursorCommand(kind: Int) -> Block {
        let shape = kind == Self.cursorSet ? cursor : nil
        let pixelBytes = shape.map { $0.width * $0.height * 4 } ?? 0
        let cmdAt = BlockLayout.header
        let cursorAt = (cmdAt + MemoryLayout<QXLCursorCmd>.size + 15) & ~15
        let size = cursorAt + MemoryLayout<QXLCursor>.size + pixelBytes
        let block = malloc(size)!
        BlockLayout.writeHeader(block, bytes: pixelBytes)
        let cmd = (block + cmdAt).bindMemory(to: QXLCursorCmd.self, capacity: 1)
        cmd.initialize(to: QXLCursorCmd())
        cmd.pointee.release_info.id = BlockLayout.physical(block)
        let hotX = cursor?.hotX ?? 0, hotY = cursor?.hotY ?? 0
        let position = QXLPoint16(x: Int16(clamping: cursorX + hotX), y: Int16(clamping: cursorY + hotY))
        switch kind {
        case Self.cursorSet:
            let shape = shape!
            cmd.pointee.type = UInt8(QXL_CURSOR_SET)
            cmd.pointee.u.set.position = position
            cmd.pointee.u.set.visible = 1
            let c = (block + cursorAt).bindMemory(to: QXLCursor.self, capacity: 1)
            c.initialize(to: QXLCursor())
            cursorUnique &+= 1
            c.pointee.header.unique = cursorUnique
            c.pointee.header.type = UInt16(SPICE_CURSOR_TYPE_ALPHA.rawValue)
            c.pointee.header.width = UInt16(shape.width)
            c.pointee.header.height = UInt16(shape.height)
            c.pointee.header.hot_spot_x = UInt16(shape.hotX)
            c.pointee.header.hot_spot_y = UInt16(shape.hotY)
            c.pointee.data_size = UInt32(pixelBytes)
            c.pointee.chunk.data_size = UInt32(pixelBytes)
            c.pointee.chunk.prev_chunk = 0
            c.pointee.chunk.next_chunk = 0
            // The pixels follow the chunk header (QXLDataChunk.data[0]).
            shape.argb.withUnsafeBytes { src in
                (block + cursorAt + MemoryLayout<QXLCursor>.size).copyMemory(from: src.baseAddress!, byteCount: pixelBytes)
            }
            cmd.pointee.u.set.shape = BlockLayout.physical(UnsafeMutableRawPointer(c))
        case Self.cursorMove:
            cmd.pointee.type = UInt8(QXL_CURSOR_MOVE)
            cmd.pointee.u.position = position
        default:
            cmd.pointee.type = UInt8(QXL_CURSOR_HIDE)
        }
        return Block(address: UInt(bitPattern: block), command: UInt64(UInt(bitPattern: cmd)),
                     type: QXL_CMD_CURSOR.rawValue, rect: SpiceRect(x: 0, y: 0, width: 0, height: 0),
                     bytes: pixelBytes, cursorKind: kind)
    }

    /// Queues under the lock; a define or hide supersedes everything unfetched
    /// before it, a move replaces an unfetched move: the cursor queue holds at
    /// most a define or hide and one move.
    private func queueCursor(kind: Int) {
        var superseded: [Block] = []
        lock.withLock {
            if kind == Self.cursorMove {
                superseded = cursorQueue.filter { $0.cursorKind == Self.cursorMove }
                cursorQueue.removeAll { $0.cursorKind == Self.cursorMove }
            } else {
                superseded = cursorQueue
                cursorQueue.removeAll()
            }
            for b in superseded { live[b.address] = nil }
            let b = makeCursorCommand(kind: kind)
            cursorQueue.append(b)
            live[b.address] = b.bytes
            stats.cursorCommands += 1
            refreshCounters()
        }
        for b in superseded { free(UnsafeMutableRawPointer(bitPattern: b.address)) }
    }

    func setCursor(_ shape: CursorShape, x: Int, y: Int) {
        lock.withLock {
            cursor = shape
            cursorVisible = true
            cursorX = x
            cursorY = y
        }
        queueCursor(kind: Self.cursorSet)
    }

    /// False when there is nothing to show (no visible cursor).
    func moveCursor(x: Int, y: Int) -> Bool {
        let visible: Bool = lock.withLock {
            cursorX = x
            cursorY = y
            return cursorVisible && cursor != nil
        }
        if visible { queueCursor(kind: Self.cursorMove) }
        return visible
    }

    func hideCursor() {
        lock.withLock { cursorVisible = false }
        queueCursor(kind: Self.cursorHide)
    }

    /// After a new primary surface: the shape again, if one is shown.
    func requeueCursor() -> Bool {
        let visible = lock.withLock { cursorVisible && cursor != nil }
        if visible { queueCursor(kind: Self.cursorSet) }
        return visible
    }

    // MARK: Worker side

    fileprivate func nextCommand(cursor isCursor: Bool, into ext: UnsafeMutablePointer<QXLCommandExt>) -> Bool {
        lock.withLock {
            guard !closed else { return false }
            let b: Block
            if isCursor {
                guard !cursorQueue.isEmpty else { return false }
                b = cursorQueue.removeFirst()
            } else {
                guard !queue.isEmpty else { return false }
                b = queue.removeFirst()
                queuedBytes -= b.bytes
                stats.fetched += 1
                refreshCounters()
            }
            ext.pointee = QXLCommandExt()
            ext.pointee.cmd.data = b.command
            ext.pointee.cmd.type = b.type
            ext.pointee.cmd.padding = 0
            ext.pointee.group_id = 0  // MEMSLOT_GROUP_HOST
            ext.pointee.flags = 0
            return true
        }
    }

    fileprivate func hasCommands(cursor isCursor: Bool) -> Bool {
        lock.withLock { isCursor ? !cursorQueue.isEmpty : !queue.isEmpty }
    }

    fileprivate func release(_ id: UInt64) {
        guard let block = UnsafeMutableRawPointer(bitPattern: UInt(id)) else { return }
        let known: Bool = lock.withLock {
            guard live.removeValue(forKey: UInt(id)) != nil else { return false }
            stats.released += 1
            refreshCounters()
            return true
        }
        if known { free(block) }
    }

    /// After the worker is gone: every block and the primary.
    func freeAll() {
        let blocks: [UInt] = lock.withLock {
            let all = Array(live.keys)
            live.removeAll()
            queue.removeAll()
            cursorQueue.removeAll()
            queuedBytes = 0
            refreshCounters()
            return all
        }
        for a in blocks { free(UnsafeMutableRawPointer(bitPattern: a)) }
        free(primary)
        primary = nil
    }

    fileprivate func clientMonitorsConfig(_ config: UnsafeMutablePointer<VDAgentMonitorsConfig>?) -> Int32 {
        guard let config else {
            // A probe: say yes only if the producer listens, else the agent gets the config.
            return lock.withLock { monitorsHandler != nil } ? 1 : 0
        }
        // The server validated the message size against num_of_monitors; copy while the pointer is valid.
        let count = min(Int(config.pointee.num_of_monitors), 16)
        var monitors: [SpiceMonitorConfig] = []
        let first = UnsafeMutableRawPointer(config) + MemoryLayout<VDAgentMonitorsConfig>.size
        for i in 0..<count {
            let m = (first + i * MemoryLayout<VDAgentMonConfig>.size).loadUnaligned(as: VDAgentMonConfig.self)
            monitors.append(SpiceMonitorConfig(x: m.x, y: m.y, width: m.width, height: m.height, depth: m.depth))
        }
        let handler: (([SpiceMonitorConfig]) -> Void)? = lock.withLock {
            stats.monitorsConfigs += 1
            return monitorsHandler
        }
        guard let handler else { return 0 }
        // Normally already on the loop thread (main channel); hop there if not.
        nonisolated(unsafe) let h = handler
        let copy = monitors
        SpiceCore.onLoop { h(copy) }
        return 1
    }

    // MARK: The C interface ("qxl" 3.3)

    private static func state(_ qin: UnsafeMutablePointer<QXLInstance>?) -> DisplayState? {
        InstanceContext.owner(of: qin, as: DisplayState.self)
    }

    nonisolated(unsafe) static let interface: UnsafeMutablePointer<QXLInterface> = {
        let p = UnsafeMutablePointer<QXLInterface>.allocate(capacity: 1)
        p.initialize(to: QXLInterface())
        p.pointee.base = baseInterface(SPICE_INTERFACE_QXL, "hostvmm simple display",
                                       SPICE_INTERFACE_QXL_MAJOR, SPICE_INTERFACE_QXL_MINOR)
        p.pointee.attached_worker = { _ in }
        p.pointee.set_compression_level = { _, _ in }
        p.pointee.get_init_info = { _, info in
            // QEMU's values for its simple display (spice.md §4.1).
            guard let info else { return }
            info.pointee.memslot_gen_bits = 8
            info.pointee.memslot_id_bits = 8
            info.pointee.num_memslots = 8
            info.pointee.num_memslots_groups = 2
            info.pointee.internal_groupslot_id = 0
            info.pointee.qxl_ram_size = 16 << 20
            info.pointee.n_surfaces = 1024
        }
        // Worker thread from here on (spice.md §3).
        p.pointee.get_command = { qin, ext in
            guard let ext, let s = state(qin) else { return 0 }
            return s.nextCommand(cursor: false, into: ext) ? 1 : 0
        }
        // 0 = commands are waiting (the worker keeps pulling); 1 = none, we call
        // spice_qxl_wakeup after queueing the next. flush() always wakes, so a
        // command queued between get_command and this call is never stranded.
        p.pointee.req_cmd_notification = { qin in
            guard let s = state(qin) else { return 1 }
            return s.hasCommands(cursor: false) ? 0 : 1
        }
        p.pointee.release_resource = { qin, info in
            guard let s = state(qin), let r = info.info else { return }
            s.release(r.pointee.id)
        }
        p.pointee.get_cursor_command = { qin, ext in
            guard let ext, let s = state(qin) else { return 0 }
            return s.nextCommand(cursor: true, into: ext) ? 1 : 0
        }
        p.pointee.req_cursor_notification = { qin in
            guard let s = state(qin) else { return 1 }
            return s.hasCommands(cursor: true) ? 0 : 1
        }
        // QXL-device-only callbacks: a simple display never triggers them (QEMU aborts; we ignore).
        p.pointee.notify_update = { _, _ in }
        p.pointee.flush_resources = { _ in 0 }
        p.pointee.async_complete = { _, _ in }
        p.pointee.update_area_complete = { _, _, _, _ in }
        p.pointee.set_client_capabilities = { _, _, _ in }
        p.pointee.client_monitors_config = { qin, config in
            guard let s = state(qin) else { return 0 }
            return s.clientMonitorsConfig(config)
        }
        return p
    }()
}
