import CSpiceServer
import LinuxSystem
#if canImport(Glibc)
import Glibc
#endif

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
    }

    private let state: DisplayState
    private weak var server: SpiceServer?
    /// Serialises the producer's calls (update/resize/cursor), never taken by the worker.
    private let producerLock = Monitor()
    /// Image ids: only the producer makes images, so `producerLock` guards this.
    private var imageUnique: UInt64 = 0

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

    /// One block: [QXLDrawable | QXLImage | pixels] (DisplayState keeps each block's size). release_info.id is
    /// the block's address; release_resource frees it (spice.md §4.3-4.4).
    private func makeDrawable(rect: SpiceRect, from fb: SpiceFramebuffer) -> DisplayState.Block {
        let rowBytes = rect.width * 4
        let pixelBytes = rowBytes * rect.height
        let drawableAt = 0
        let imageAt = (drawableAt + MemoryLayout<QXLDrawable>.size + 15) & ~15
        let pixelsAt = (imageAt + MemoryLayout<QXLImage>.size + 63) & ~63
        let size = pixelsAt + pixelBytes
        let block = malloc(size)!
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
        imageUnique = (imageUnique &+ 1) & 0xFFFF_FFFF
        image.pointee.descriptor.id = (imageUnique << 32) | UInt64(QXL_IMAGE_GROUP_DEVICE)
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

    public var stats: Stats { state.lock.withLock { state.statsNow } }

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

/// Addresses inside the command blocks SpiceDisplay allocates.
enum BlockLayout {
    /// QXLPHYSICAL of a host pointer, valid through memslot 0 (top 16 bits clear on x86-64/arm64).
    static func physical(_ p: UnsafeMutableRawPointer) -> UInt64 { UInt64(UInt(bitPattern: p)) }
}
