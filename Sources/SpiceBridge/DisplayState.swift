import CSpiceServer
import LinuxSystem
#if canImport(Glibc)
import Glibc
#endif

/// Everything spice's worker thread touches, behind `lock` (spice.md §9.1).
/// Its methods take `lock` themselves and never call libspice; the exceptions are
/// `statsNow` (the caller holds `lock`) and the fields SpiceDisplay sets itself:
/// `closed` and `monitorsHandler` under `lock`, `primary` only while no worker runs
/// on it (around the sync primary-surface calls, and after the worker is gone).
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
    /// Every block not yet released: address -> pixel bytes, and their sum.
    private var live: [UInt: Int] = [:]
    private var liveBytes = 0
    private var cursorQueue: [Block] = []
    private var cursorUnique: UInt64 = 0
    private var cursor: CursorShape?
    private var cursorVisible = false
    private var cursorX = 0
    private var cursorY = 0
    /// The counters; the gauges (queued, outstanding) come from the state in `statsNow`.
    private var counters = SpiceDisplay.Stats()

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

    // MARK: Producer side

    func enqueue(_ blocks: [Block]) {
        lock.withLock {
            for b in blocks {
                queue.append(b)
                queuedBytes += b.bytes
                track(b)
                counters.drawables += 1
            }
        }
    }

    /// If adding `count` drawables of `bytes` would pass the bounds, removes
    /// (and frees) every unfetched drawable and returns their rectangles.
    func takeQueueIfOver(adding count: Int, bytes: Int, maxCount: Int, maxBytes: Int) -> [SpiceRect]? {
        let taken: [Block]? = lock.withLock {
            guard queue.count + count > maxCount || queuedBytes + bytes > maxBytes else { return nil }
            counters.coalesced += 1
            return takeQueueLocked()
        }
        guard let taken else { return nil }
        for b in taken { free(UnsafeMutableRawPointer(bitPattern: b.address)) }
        return taken.map(\.rect)
    }

    /// Frees every unfetched drawable (a resize: they belong to the old surface).
    func dropQueuedDrawables() {
        for b in lock.withLock({ takeQueueLocked() }) { free(UnsafeMutableRawPointer(bitPattern: b.address)) }
    }

    /// Under `lock`: empties the unfetched queue and returns it, untracked (the caller frees).
    private func takeQueueLocked() -> [Block] {
        let old = queue
        for b in old { untrack(b.address) }
        queue.removeAll(keepingCapacity: true)
        queuedBytes = 0
        return old
    }

    /// The display's counters and gauges now. Under `lock`.
    var statsNow: SpiceDisplay.Stats {
        var s = counters
        s.queued = queue.count
        s.queuedBytes = queuedBytes
        s.outstanding = live.count
        s.outstandingBytes = liveBytes
        return s
    }

    private func track(_ b: Block) {
        live[b.address] = b.bytes
        liveBytes += b.bytes
    }

    /// False if `address` was not live.
    @discardableResult
    private func untrack(_ address: UInt) -> Bool {
        guard let bytes = live.removeValue(forKey: address) else { return false }
        liveBytes -= bytes
        return true
    }

    // MARK: Cursor (producer side; spice.md §4.6)

    private static let cursorSet = 0, cursorMove = 1, cursorHide = 2

    /// One block: [QXLCursorCmd | QXLCursor + pixels].
    private func makeCursorCommand(kind: Int) -> Block {
        let shape = kind == Self.cursorSet ? cursor : nil
        let pixelBytes = shape.map { $0.width * $0.height * 4 } ?? 0
        let cmdAt = 0
        let cursorAt = (cmdAt + MemoryLayout<QXLCursorCmd>.size + 15) & ~15
        let size = cursorAt + MemoryLayout<QXLCursor>.size + pixelBytes
        let block = malloc(size)!
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
            for b in superseded { untrack(b.address) }
            let b = makeCursorCommand(kind: kind)
            cursorQueue.append(b)
            track(b)
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
                counters.fetched += 1
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
            guard untrack(UInt(id)) else { return false }
            counters.released += 1
            return true
        }
        if known { free(block) }
    }

    /// After the worker is gone: every block and the primary.
    func freeAll() {
        let blocks: [UInt] = lock.withLock {
            let all = Array(live.keys)
            live.removeAll()
            liveBytes = 0
            queue.removeAll()
            cursorQueue.removeAll()
            queuedBytes = 0
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
        // Worker thread from here on (spice.md §3). Its first call installs the
        // worker's seccomp filter (SpiceDisplay.workerSandbox), before it has
        // read anything a client sent.
        p.pointee.get_command = { qin, ext in
            SpiceDisplay.enterWorkerSandbox()
            guard let ext, let s = state(qin) else { return 0 }
            return s.nextCommand(cursor: false, into: ext) ? 1 : 0
        }
        // 0 = commands are waiting (the worker keeps pulling); 1 = none, we call
        // spice_qxl_wakeup after queueing the next. flush() always wakes, so a
        // command queued between get_command and this call is never stranded.
        p.pointee.req_cmd_notification = { qin in
            SpiceDisplay.enterWorkerSandbox()
            guard let s = state(qin) else { return 1 }
            return s.hasCommands(cursor: false) ? 0 : 1
        }
        p.pointee.release_resource = { qin, info in
            guard let s = state(qin), let r = info.info else { return }
            s.release(r.pointee.id)
        }
        p.pointee.get_cursor_command = { qin, ext in
            SpiceDisplay.enterWorkerSandbox()
            guard let ext, let s = state(qin) else { return 0 }
            return s.nextCommand(cursor: true, into: ext) ? 1 : 0
        }
        p.pointee.req_cursor_notification = { qin in
            SpiceDisplay.enterWorkerSandbox()
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
