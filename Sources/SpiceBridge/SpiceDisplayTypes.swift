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
