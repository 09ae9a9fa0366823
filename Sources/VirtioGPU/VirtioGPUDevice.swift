import VirtioCore
#if canImport(Glibc)
import Glibc
#endif

/// Where the device's output goes (SpiceBridge's SpiceDisplay in hostvmm).
/// Called on the device's thread (hostvmm's event loop). Pixels are always
/// 32-bit B,G,R,X in memory, whatever format the guest chose: the device
/// converts at transfer time.
public protocol VirtioGPUDisplaySink: AnyObject {
    /// Scanout 0 shows a `width` x `height` image now (a new size or resource); 0 x 0: disabled.
    func scanoutChanged(width: Int, height: Int)
    /// `damage` (scanout coordinates) of the scanout's image changed. `pixels` is
    /// the scanout's top-left pixel; valid only during the call.
    func scanoutUpdated(damage: [GPURect], pixels: UnsafeRawPointer, width: Int, height: Int, stride: Int)
    /// A new cursor image (ARGB, 0xAARRGGBB), top-left at (x, y) in scanout coordinates.
    func cursorDefined(width: Int, height: Int, hotX: Int, hotY: Int, argb: [UInt32], x: Int, y: Int)
    func cursorMoved(x: Int, y: Int)
    func cursorHidden()
}

/// A virtio-gpu 2D device (virtio spec §5.7) behind VirtioCore's backend
/// protocol: resources live in host memory, their backing pages in guest
/// memory (read through `GuestMemory`, every range checked), and scanout 0's
/// damage goes to a `VirtioGPUDisplaySink`.
///
/// Threat model: every id, rectangle, offset and scatter-gather entry comes
/// from the guest. A request that names something that does not exist, or a
/// rectangle or range outside a resource or its backing, gets an ERR_*
/// response and changes nothing; no request makes the device trap, read or
/// write outside a resource's host buffer or outside guest memory, or hold
/// more than `maxHostBytes` of resources.
///
/// Display changes: the guest reads the size in GET_DISPLAY_INFO (and GET_EDID). With QEMU's
/// vhost-user-gpu frontend the device cannot tell the guest that the size
/// changed: QEMU keeps events_read itself (its get_config overwrites ours) and
/// answers VHOST_USER_BACKEND_CONFIG_CHANGE_MSG with "unhandled backend config
/// change" (hw/display/vhost-user-gpu.c). `preferredSize` takes effect at the
/// guest's next GET_DISPLAY_INFO: hostvmm makes QEMU raise the display event
/// through its D-Bus console (HostVMM's QEMUDisplayConsole), or it waits for
/// the guest's next probe.
///
/// Threading: one thread (the backend's loop), like every VirtioCore device.
public final class VirtioGPUDevice: VirtioDeviceBackend, VhostUserDeviceRequests {
    public static let controlQueue = 0
    public static let cursorQueue = 1
    /// Host memory all resources together may take.
    public static let defaultMaxHostBytes = 256 << 20
    public static let maxResources = 16384
    public static let maxDimension = 16384
    /// Scatter-gather entries per resource (QEMU's limit too).
    public static let maxBackingEntries = 16384
    public static let maxCursorSize = 256
    /// VHOST_USER_GPU_SET_SOCKET (vhost-user.rst, "Front-end message types").
    public static let vhostUserGPUSetSocket: UInt32 = 33

    public struct Stats: Sendable {
        public var commands = 0
        public var errors = 0
        public var transfers = 0
        public var bytesTransferred = 0
        public var flushes = 0
        /// Pixel bytes handed to the display: only what transfers really changed.
        public var presentedBytes = 0
        public var cursorCommands = 0
        public var resources = 0
        public var hostBytes = 0
        public var scanoutWidth = 0
        public var scanoutHeight = 0
        /// The last error response, e.g. "0x105: ERR_INVALID_PARAMETER (rectangle 10x10+1020+0 outside 1024x768 resource 3)".
        public var lastError: String?
    }

    /// struct virtio_gpu_mem_entry, checked to lie inside guest memory when attached.
    struct BackingEntry {
        var address: GuestAddress
        var length: UInt32
    }

    final class Resource {
        let id: UInt32
        let format: UInt32
        let width: Int
        let height: Int
        /// Bytes per row, in the guest's backing and in `pixels`.
        let stride: Int
        let bytes: Int
        /// Always B,G,R,X (converted at transfer if the format differs).
        let pixels: UnsafeMutableRawPointer
        /// The bounding box of pixels transfers changed and no flush has shown yet.
        var dirty: GPURect?
        /// Backing entries (each inside guest memory when attached) and their start offsets.
        var backing: [BackingEntry]?
        var backingStarts: [UInt64] = []
        var backingLength: UInt64 = 0

        init?(id: UInt32, format: UInt32, width: Int, height: Int) {
            guard let p = calloc(1, width * height * 4) else { return nil }
            self.id = id
            self.format = format
            self.width = width
            self.height = height
            stride = width * 4
            bytes = width * height * 4
            pixels = p
        }

        deinit { free(pixels) }
    }

    /// An error response with the reason, for the log and `Stats.lastError`.
    struct GPUError: Error {
        var code: UInt32
        var reason: String
    }

    public weak var sink: VirtioGPUDisplaySink?
    public var onLog: (String) -> Void = { _ in }
    public let maxHostBytes: Int
    /// What GET_DISPLAY_INFO reports for scanout 0.
    public var preferredSize: (width: Int, height: Int) = defaultSize
    public static let defaultSize = (width: 1024, height: 768)
    public internal(set) var stats = Stats()

    private var queues: VirtioQueueAccess?
    var resources: [UInt32: Resource] = [:]
    var hostBytes = 0
    var scanoutResource: UInt32?
    var scanoutRect = GPURect(x: 0, y: 0, width: 0, height: 0)
    /// Our end of QEMU's vhost-user-gpu socketpair. Held open and unused: we
    /// show frames through SPICE, not QEMU's display, and QEMU waits for nothing
    /// on it; closing it would make QEMU's reader spin on EOF.
    private var gpuSocketFD: Int32 = -1
    /// One row of a transfer, before it is compared with the resource (16384 pixels at most).
    let scratch = UnsafeMutableRawPointer.allocate(byteCount: VirtioGPUDevice.maxDimension * 4, alignment: 16)
    /// Errors logged so far; a hostile guest cannot flood the log.
    private var loggedErrors = 0

    /// Test hook (hostvmm's `display-debug-corrupt`, HOSTVMM_TEST_HOOKS=1 only): the next
    /// this many TRANSFER_TO_HOST_2D / RESOURCE_FLUSH requests are altered after they are
    /// read from the guest, as a hostile driver would send them: by turns a resource id
    /// that does not exist, a rectangle far outside the resource, an offset past the backing.
    public var corruptNextRequests = 0
    private var corruptions = 0

    public init(maxHostBytes: Int = VirtioGPUDevice.defaultMaxHostBytes) {
        self.maxHostBytes = maxHostBytes
    }

    deinit {
        if gpuSocketFD >= 0 { close(gpuSocketFD) }
        scratch.deallocate()
    }

    // MARK: - VirtioDeviceBackend

    /// EDID: the guest reads the preferred mode from an EDID too (and QEMU does not warn).
    public var deviceFeatures: UInt64 { VirtioGPU.featureEDID }
    public var queueCount: Int { 2 }
    public var configSize: Int { VirtioGPU.configSize }
    /// attach_backing with the most entries is 32 + 16 x 16384 bytes.
    public var maxChainBytes: UInt64 { 1 << 20 }

    public func attach(_ queues: VirtioQueueAccess) { self.queues = queues }

    public func readConfig(offset: Int, count: Int) -> [UInt8] {
        var c = [UInt8](repeating: 0, count: VirtioGPU.configSize)
        c.putU32(1, at: 8)  // num_scanouts; events_read stays 0: QEMU keeps its own (see above)
        return Array(c[offset..<(offset + count)])
    }

    /// Only events_clear is writable, and we never raise an event to clear: QEMU keeps
    /// events_read for vhost-user-gpu and clears it itself.
    public func writeConfig(offset: Int, bytes: [UInt8]) {}

    public func queueNotified(_ index: Int) {
        switch index {
        case Self.controlQueue: processControl()
        case Self.cursorQueue: processCursor()
        default: break
        }
    }

    public func reset() {
        resources = [:]
        hostBytes = 0
        scanoutResource = nil
        scanoutRect = GPURect(x: 0, y: 0, width: 0, height: 0)
        refreshStats()
    }

    public func handleVhostUserRequest(_ request: UInt32, payload: [UInt8], fds: inout [Int32]) -> [UInt8]? {
        guard request == Self.vhostUserGPUSetSocket else { return nil }
        if gpuSocketFD >= 0 { close(gpuSocketFD) }
        gpuSocketFD = fds.isEmpty ? -1 : fds.removeFirst()
        return []
    }

    // MARK: - Queues

    private func processControl() {
        guard let queues, let q = queues.queue(Self.controlQueue) else { return }
        var used = false
        while let chain = q.pop() {
            used = true
            let response: [UInt8]
            if queues.isEnabled(Self.controlQueue) {
                response = handleControl(chain, memory: q.memory)
            } else {
                response = []
            }
            let written = (try? chain.write(response, memory: q.memory)) ?? 0
            q.push(head: chain.head, length: UInt32(written))
        }
        if used || q.broken != nil { queues.notify(Self.controlQueue) }
    }

    private func processCursor() {
        guard let queues, let q = queues.queue(Self.cursorQueue) else { return }
        var used = false
        while let chain = q.pop() {
            used = true
            if queues.isEnabled(Self.cursorQueue),
                let bytes = try? chain.read(memory: q.memory, limit: VirtioGPU.cursorCommandSize),
                bytes.count == VirtioGPU.cursorCommandSize
            {
                handleCursor(WireReader(bytes: bytes))
            }
            q.push(head: chain.head, length: 0)
        }
        if used || q.broken != nil { queues.notify(Self.cursorQueue) }
    }

    /// One control request; returns the response bytes (header first).
    private func handleControl(_ chain: DescriptorChain, memory: GuestMemory) -> [UInt8] {
        stats.commands += 1
        guard let head = try? chain.read(memory: memory, limit: VirtioGPU.headerSize),
            head.count == VirtioGPU.headerSize
        else {
            return error(GPUError(code: VirtioGPU.Response.errUnspec, reason: "request shorter than a header"),
                         type: 0, header: nil)
        }
        let h = WireReader(bytes: head)
        let type = h.u32(0)
        do {
            guard let size = VirtioGPU.requestSize(type) else {
                throw GPUError(code: VirtioGPU.Response.errUnspec, reason: "unsupported command")
            }
            var bytes = try chain.read(memory: memory, limit: size)
            if corruptNextRequests > 0, bytes.count == size,
                type == VirtioGPU.Command.transferToHost2D || type == VirtioGPU.Command.resourceFlush
            {
                corruptNextRequests -= 1
                corruptions += 1
                let h = VirtioGPU.headerSize
                switch corruptions % 3 {
                case 0: bytes.putU32(0xDEAD_BEEF, at: type == VirtioGPU.Command.resourceFlush ? h + 16 : h + 24)
                case 1: bytes.putU32(0xFFFF_FF00, at: h)  // x
                default:
                    if type == VirtioGPU.Command.transferToHost2D { bytes.putU64(UInt64.max - 1, at: h + 16) }
                    else { bytes.putU32(0x7FFF_FFFF, at: h + 12) }  // height
                }
            }
            guard bytes.count == size else {
                throw GPUError(code: VirtioGPU.Response.errUnspec, reason: "request of \(bytes.count) bytes, expected \(size)")
            }
            let r = WireReader(bytes: bytes)
            let h = VirtioGPU.headerSize
            switch type {
            case VirtioGPU.Command.getDisplayInfo:
                return displayInfo(header: head)
            case VirtioGPU.Command.getEDID:
                guard r.u32(h) == 0 else {
                    throw GPUError(code: VirtioGPU.Response.errInvalidScanoutID, reason: "EDID of scanout \(r.u32(h))")
                }
                var out = response(VirtioGPU.Response.okEDID, header: head, size: VirtioGPU.edidResponseSize)
                let edid = VirtioGPUEDID.block(width: preferredSize.width, height: preferredSize.height)
                out.putU32(UInt32(edid.count), at: h)
                out.replaceSubrange((h + 8)..<(h + 8 + edid.count), with: edid)
                return out
            case VirtioGPU.Command.resourceCreate2D:
                try create2D(id: r.u32(h), format: r.u32(h + 4), width: r.u32(h + 8), height: r.u32(h + 12))
            case VirtioGPU.Command.resourceUnref:
                try unref(id: r.u32(h))
            case VirtioGPU.Command.setScanout:
                try setScanout(rect: r.rect(h), scanout: r.u32(h + 16), id: r.u32(h + 20))
            case VirtioGPU.Command.resourceFlush:
                try flush(rect: r.rect(h), id: r.u32(h + 16))
            case VirtioGPU.Command.transferToHost2D:
                try transfer(rect: r.rect(h), offset: r.u64(h + 16), id: r.u32(h + 24), memory: memory)
            case VirtioGPU.Command.resourceAttachBacking:
                try attachBacking(id: r.u32(h), count: r.u32(h + 4), chain: chain, memory: memory)
            case VirtioGPU.Command.resourceDetachBacking:
                try detachBacking(id: r.u32(h))
            default:
                throw GPUError(code: VirtioGPU.Response.errUnspec, reason: "unsupported command")
            }
            return response(VirtioGPU.Response.okNoData, header: head, size: VirtioGPU.headerSize)
        } catch let e as GPUError {
            return error(e, type: type, header: head)
        } catch {
            return self.error(GPUError(code: VirtioGPU.Response.errUnspec, reason: "\(error)"), type: type, header: head)
        }
    }

    /// A response of `size` bytes with its header filled in (fence and context echoed).
    func response(_ code: UInt32, header: [UInt8]?, size: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: size)
        out.putU32(code, at: 0)
        if let header {
            let h = WireReader(bytes: header)
            out.putU32(h.u32(4) & VirtioGPU.flagFence, at: 4)
            out.putU64(h.u64(8), at: 8)  // fence_id
            out.putU32(h.u32(16), at: 16)  // ctx_id
        }
        return out
    }

    private func error(_ e: GPUError, type: UInt32, header: [UInt8]?) -> [UInt8] {
        stats.errors += 1
        let line = "0x\(String(type, radix: 16)): \(Self.responseName(e.code)) (\(e.reason))"
        stats.lastError = line
        if loggedErrors < 20 {
            loggedErrors += 1
            onLog("virtio-gpu: " + line + (loggedErrors == 20 ? "; not logging further errors" : ""))
        }
        return response(e.code, header: header, size: VirtioGPU.headerSize)
    }

    public static func responseName(_ code: UInt32) -> String {
        switch code {
        case VirtioGPU.Response.okNoData: return "OK_NODATA"
        case VirtioGPU.Response.okDisplayInfo: return "OK_DISPLAY_INFO"
        case VirtioGPU.Response.okEDID: return "OK_EDID"
        case VirtioGPU.Response.errUnspec: return "ERR_UNSPEC"
        case VirtioGPU.Response.errOutOfMemory: return "ERR_OUT_OF_MEMORY"
        case VirtioGPU.Response.errInvalidScanoutID: return "ERR_INVALID_SCANOUT_ID"
        case VirtioGPU.Response.errInvalidResourceID: return "ERR_INVALID_RESOURCE_ID"
        case VirtioGPU.Response.errInvalidParameter: return "ERR_INVALID_PARAMETER"
        default: return "0x" + String(code, radix: 16)
        }
    }

    // MARK: - Cursor

    private func handleCursor(_ c: WireReader) {
        stats.cursorCommands += 1
        let h = VirtioGPU.headerSize
        let type = c.u32(0)
        let scanout = c.u32(h)
        let x = Int(Int32(bitPattern: c.u32(h + 4))), y = Int(Int32(bitPattern: c.u32(h + 8)))
        guard scanout == 0 else { return }
        switch type {
        case VirtioGPU.Command.moveCursor:
            sink?.cursorMoved(x: x, y: y)
        case VirtioGPU.Command.updateCursor:
            let id = c.u32(h + 16)
            guard id != 0 else {
                sink?.cursorHidden()
                return
            }
            guard let r = resources[id], r.width <= Self.maxCursorSize, r.height <= Self.maxCursorSize else {
                _ = error(GPUError(code: VirtioGPU.Response.errInvalidResourceID, reason: "cursor resource \(id)"),
                          type: type, header: nil)
                return
            }
            let hotX = min(Int(c.u32(h + 20)), r.width - 1), hotY = min(Int(c.u32(h + 24)), r.height - 1)
            let argb = [UInt32](UnsafeBufferPointer(start: r.pixels.assumingMemoryBound(to: UInt32.self),
                                                    count: r.width * r.height)).map { UInt32(littleEndian: $0) }
            sink?.cursorDefined(width: r.width, height: r.height, hotX: hotX, hotY: hotY, argb: argb, x: x, y: y)
        default:
            break
        }
    }

    func refreshStats() {
        stats.resources = resources.count
        stats.hostBytes = hostBytes
        stats.scanoutWidth = scanoutResource == nil ? 0 : Int(scanoutRect.width)
        stats.scanoutHeight = scanoutResource == nil ? 0 : Int(scanoutRect.height)
    }
}
