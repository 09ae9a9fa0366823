import VirtioCore

/// Wire constants and layouts of virtio-gpu (virtio spec 1.3 §5.7), 2D subset.
/// All fields are little-endian; offsets below are from the start of a request.
public enum VirtioGPU {
    /// Feature bits (§5.7.3). We offer EDID only: no 3D, no blobs.
    public static let featureVirgl: UInt64 = 1 << 0
    public static let featureEDID: UInt64 = 1 << 1

    /// Command types (§5.7.6.7).
    public enum Command {
        public static let getDisplayInfo: UInt32 = 0x0100
        public static let resourceCreate2D: UInt32 = 0x0101
        public static let resourceUnref: UInt32 = 0x0102
        public static let setScanout: UInt32 = 0x0103
        public static let resourceFlush: UInt32 = 0x0104
        public static let transferToHost2D: UInt32 = 0x0105
        public static let resourceAttachBacking: UInt32 = 0x0106
        public static let resourceDetachBacking: UInt32 = 0x0107
        public static let getCapsetInfo: UInt32 = 0x0108
        public static let getCapset: UInt32 = 0x0109
        public static let getEDID: UInt32 = 0x010a
        public static let updateCursor: UInt32 = 0x0300
        public static let moveCursor: UInt32 = 0x0301
    }

    /// Response types.
    public enum Response {
        public static let okNoData: UInt32 = 0x1100
        public static let okDisplayInfo: UInt32 = 0x1101
        public static let okEDID: UInt32 = 0x1104
        public static let errUnspec: UInt32 = 0x1200
        public static let errOutOfMemory: UInt32 = 0x1201
        public static let errInvalidScanoutID: UInt32 = 0x1202
        public static let errInvalidResourceID: UInt32 = 0x1203
        public static let errInvalidContextID: UInt32 = 0x1204
        public static let errInvalidParameter: UInt32 = 0x1205
    }

    /// virtio_gpu_ctrl_hdr.flags: the driver wants the fence completed with the response.
    public static let flagFence: UInt32 = 1 << 0
    /// virtio_gpu_config.events_read bit: the display configuration changed.
    public static let eventDisplay: UInt32 = 1 << 0
    /// VIRTIO_GPU_MAX_SCANOUTS: entries in a display-info response.
    public static let maxScanouts = 16

    /// struct virtio_gpu_ctrl_hdr.
    public static let headerSize = 24
    /// struct virtio_gpu_resp_display_info: header + 16 x (rect, enabled, flags).
    public static let displayInfoSize = headerSize + maxScanouts * 24
    /// struct virtio_gpu_resp_edid: header, size, padding, edid[1024].
    public static let edidResponseSize = headerSize + 8 + 1024
    /// struct virtio_gpu_config: events_read, events_clear, num_scanouts, num_capsets.
    public static let configSize = 16
    /// struct virtio_gpu_update_cursor (also move_cursor).
    public static let cursorCommandSize = headerSize + 16 + 16
    /// struct virtio_gpu_mem_entry.
    public static let memEntrySize = 16

    /// Fixed request sizes, by command (attach_backing: without its entries).
    static func requestSize(_ type: UInt32) -> Int? {
        switch type {
        case Command.getDisplayInfo: return headerSize
        case Command.resourceCreate2D: return headerSize + 16
        case Command.resourceUnref, Command.resourceDetachBacking: return headerSize + 8
        case Command.setScanout: return headerSize + 24
        case Command.resourceFlush: return headerSize + 24
        case Command.transferToHost2D: return headerSize + 32
        case Command.resourceAttachBacking: return headerSize + 8
        case Command.getEDID: return headerSize + 8
        default: return nil
        }
    }

    /// virtio_gpu_formats (§5.7.6.8): every one is 32 bits per pixel. The value is
    /// where blue, green, red and alpha/X sit in a pixel's 4 bytes in memory.
    static func byteOrder(format: UInt32) -> (b: Int, g: Int, r: Int, a: Int)? {
        switch format {
        case 1, 2: return (0, 1, 2, 3)  // B8G8R8A8_UNORM, B8G8R8X8_UNORM
        case 3, 4: return (3, 2, 1, 0)  // A8R8G8B8_UNORM, X8R8G8B8_UNORM
        case 67, 134: return (2, 1, 0, 3)  // R8G8B8A8_UNORM, R8G8B8X8_UNORM
        case 68, 121: return (1, 2, 3, 0)  // X8B8G8R8_UNORM, A8B8G8R8_UNORM
        default: return nil
        }
    }
}

/// struct virtio_gpu_rect.
public struct GPURect: Equatable, Sendable, CustomStringConvertible {
    public var x: UInt32
    public var y: UInt32
    public var width: UInt32
    public var height: UInt32

    public init(x: UInt32, y: UInt32, width: UInt32, height: UInt32) {
        self.x = x
        self.y = y
        self.width = width
        self.height = height
    }

    public var description: String { "\(width)x\(height)+\(x)+\(y)" }
    public var isEmpty: Bool { width == 0 || height == 0 }

    /// Inside [0, w) x [0, h), computed without overflow.
    func fits(width w: Int, height h: Int) -> Bool {
        UInt64(x) + UInt64(width) <= UInt64(w) && UInt64(y) + UInt64(height) <= UInt64(h)
    }

    /// The bounding box of both (neither empty; both inside a resource, so no overflow).
    func union(_ o: GPURect) -> GPURect {
        let x0 = min(x, o.x), y0 = min(y, o.y)
        let x1 = max(x + width, o.x + o.width), y1 = max(y + height, o.y + o.height)
        return GPURect(x: x0, y: y0, width: x1 - x0, height: y1 - y0)
    }

    func intersection(_ o: GPURect) -> GPURect {
        let x0 = max(UInt64(x), UInt64(o.x)), y0 = max(UInt64(y), UInt64(o.y))
        let x1 = min(UInt64(x) + UInt64(width), UInt64(o.x) + UInt64(o.width))
        let y1 = min(UInt64(y) + UInt64(height), UInt64(o.y) + UInt64(o.height))
        guard x1 > x0, y1 > y0 else { return GPURect(x: 0, y: 0, width: 0, height: 0) }
        return GPURect(x: UInt32(x0), y: UInt32(y0), width: UInt32(x1 - x0), height: UInt32(y1 - y0))
    }
}

extension WireReader {
    func rect(_ at: Int) -> GPURect { GPURect(x: u32(at), y: u32(at + 4), width: u32(at + 8), height: u32(at + 12)) }
}
