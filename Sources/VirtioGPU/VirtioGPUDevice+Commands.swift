import VirtioCore
#if canImport(Glibc)
import Glibc
#endif

/// The control queue's commands (virtio spec §5.7.6.8): display info, 2D
/// resources, backing, scanout, transfer and flush. Every id, rectangle,
/// offset and backing entry is checked before use.
extension VirtioGPUDevice {
    func displayInfo(header: [UInt8]) -> [UInt8] {
        var out = response(VirtioGPU.Response.okDisplayInfo, header: header, size: VirtioGPU.displayInfoSize)
        let at = VirtioGPU.headerSize
        out.putU32(UInt32(preferredSize.width), at: at + 8)
        out.putU32(UInt32(preferredSize.height), at: at + 12)
        out.putU32(1, at: at + 16)  // enabled
        return out
    }

    func resource(_ id: UInt32) throws(GPUError) -> Resource {
        guard let r = resources[id] else {
            throw GPUError(code: VirtioGPU.Response.errInvalidResourceID, reason: "no resource \(id)")
        }
        return r
    }

    func create2D(id: UInt32, format: UInt32, width: UInt32, height: UInt32) throws(GPUError) {
        guard id != 0, resources[id] == nil else {
            throw GPUError(code: VirtioGPU.Response.errInvalidResourceID,
                           reason: id == 0 ? "resource id 0" : "resource \(id) exists")
        }
        guard VirtioGPU.byteOrder(format: format) != nil else {
            throw GPUError(code: VirtioGPU.Response.errInvalidParameter, reason: "format \(format)")
        }
        guard width > 0, height > 0, width <= Self.maxDimension, height <= Self.maxDimension else {
            throw GPUError(code: VirtioGPU.Response.errInvalidParameter, reason: "size \(width)x\(height)")
        }
        let bytes = Int(width) * Int(height) * 4  // <= 1 GiB, no overflow
        guard resources.count < Self.maxResources, hostBytes + bytes <= maxHostBytes else {
            throw GPUError(code: VirtioGPU.Response.errOutOfMemory,
                           reason: "\(width)x\(height) would pass the limit (\(resources.count) resources, "
                               + "\(hostBytes >> 20) of \(maxHostBytes >> 20) MiB)")
        }
        guard let r = Resource(id: id, format: format, width: Int(width), height: Int(height)) else {
            throw GPUError(code: VirtioGPU.Response.errOutOfMemory, reason: "calloc")
        }
        resources[id] = r
        hostBytes += bytes
        refreshStats()
    }

    func unref(id: UInt32) throws(GPUError) {
        let r = try resource(id)
        if scanoutResource == id {
            scanoutResource = nil
            scanoutRect = GPURect(x: 0, y: 0, width: 0, height: 0)
            sink?.scanoutChanged(width: 0, height: 0)
        }
        hostBytes -= r.bytes
        resources[id] = nil
        refreshStats()
    }

    func setScanout(rect: GPURect, scanout: UInt32, id: UInt32) throws(GPUError) {
        guard scanout == 0 else {
            throw GPUError(code: VirtioGPU.Response.errInvalidScanoutID, reason: "scanout \(scanout)")
        }
        if id == 0 || rect.isEmpty {
            // Disable the scanout.
            if scanoutResource != nil { sink?.scanoutChanged(width: 0, height: 0) }
            scanoutResource = nil
            scanoutRect = GPURect(x: 0, y: 0, width: 0, height: 0)
            refreshStats()
            return
        }
        let r = try resource(id)
        guard rect.fits(width: r.width, height: r.height) else {
            throw GPUError(code: VirtioGPU.Response.errInvalidParameter,
                           reason: "scanout rectangle \(rect) outside \(r.width)x\(r.height) resource \(id)")
        }
        let resized = rect.width != scanoutRect.width || rect.height != scanoutRect.height || scanoutResource == nil
        scanoutResource = id
        scanoutRect = rect
        refreshStats()
        if resized { sink?.scanoutChanged(width: Int(rect.width), height: Int(rect.height)) }
        // The new image at once, as QEMU shows a new scanout surface.
        r.dirty = nil
        present(r, damage: rect)
    }

    func flush(rect: GPURect, id: UInt32) throws(GPUError) {
        let r = try resource(id)
        guard rect.fits(width: r.width, height: r.height) else {
            throw GPUError(code: VirtioGPU.Response.errInvalidParameter,
                           reason: "flush rectangle \(rect) outside \(r.width)x\(r.height) resource \(id)")
        }
        stats.flushes += 1
        // Only what transfers changed: Linux's fbdev emulation flushes the whole
        // frame for a blinking text cursor, five times a second.
        guard scanoutResource == id, let dirty = r.dirty else { return }
        let part = rect.intersection(dirty)
        if part == dirty { r.dirty = nil }
        if !part.isEmpty { present(r, damage: part) }
    }

    /// Hands the whole scanout to the sink again (a sink that resized its surface
    /// after the scanout changed, and lost what came before). Nothing without a scanout.
    public func presentScanout() {
        guard let id = scanoutResource, let r = resources[id] else { return }
        present(r, damage: scanoutRect)
    }

    /// Hands the part of `damage` (resource coordinates) inside the scanout to the sink.
    func present(_ r: Resource, damage: GPURect) {
        let d = damage.intersection(scanoutRect)
        guard !d.isEmpty, let sink else { return }
        let local = GPURect(x: d.x - scanoutRect.x, y: d.y - scanoutRect.y, width: d.width, height: d.height)
        let origin = r.pixels + Int(scanoutRect.y) * r.stride + Int(scanoutRect.x) * 4
        stats.presentedBytes += Int(local.width) * Int(local.height) * 4
        sink.scanoutUpdated(damage: [local], pixels: UnsafeRawPointer(origin), width: Int(scanoutRect.width),
                            height: Int(scanoutRect.height), stride: r.stride)
    }

    func transfer(rect: GPURect, offset: UInt64, id: UInt32, memory: GuestMemory) throws(GPUError) {
        let r = try resource(id)
        guard r.backing != nil else {
            throw GPUError(code: VirtioGPU.Response.errInvalidResourceID, reason: "resource \(id) has no backing")
        }
        guard rect.fits(width: r.width, height: r.height) else {
            throw GPUError(code: VirtioGPU.Response.errInvalidParameter,
                           reason: "rectangle \(rect) outside \(r.width)x\(r.height) resource \(id)")
        }
        guard !rect.isEmpty else { return }
        let rowBytes = Int(rect.width) * 4
        let rows = Int(rect.height)
        // The last byte read: offset + (rows-1)*stride + rowBytes, in UInt64 so no guest value overflows it.
        let (lastRow, o1) = UInt64(rows - 1).multipliedReportingOverflow(by: UInt64(r.stride))
        let (end0, o2) = offset.addingReportingOverflow(lastRow)
        let (end, o3) = end0.addingReportingOverflow(UInt64(rowBytes))
        guard !o1, !o2, !o3, end <= r.backingLength else {
            throw GPUError(code: VirtioGPU.Response.errInvalidParameter,
                           reason: "rectangle \(rect) at offset \(offset) reads past the \(r.backingLength)-byte backing of resource \(id)")
        }
        let order = VirtioGPU.byteOrder(format: r.format)!
        let native = order.b == 0 && order.g == 1 && order.r == 2 && order.a == 3
        // Each row goes through `scratch` and is compared with what the resource
        // holds, so the dirty box covers only pixels that really changed.
        var x0 = Int.max, x1 = -1, y0 = Int.max, y1 = -1
        let width = Int(rect.width)
        for row in 0..<rows {
            let src = offset + UInt64(row) * UInt64(r.stride)
            let dst = r.pixels + (Int(rect.y) + row) * r.stride + Int(rect.x) * 4
            try copyFromBacking(r, offset: src, count: rowBytes, to: scratch, memory: memory)
            if !native { Self.convertToBGRX(scratch, pixels: width, order: order) }
            guard memcmp(scratch, dst, rowBytes) != 0 else { continue }
            let new = scratch.assumingMemoryBound(to: UInt32.self), old = dst.assumingMemoryBound(to: UInt32.self)
            var first = 0
            while new[first] == old[first] { first += 1 }
            var last = width - 1
            while new[last] == old[last] { last -= 1 }
            dst.copyMemory(from: scratch, byteCount: rowBytes)
            x0 = min(x0, first)
            x1 = max(x1, last)
            y0 = min(y0, row)
            y1 = max(y1, row)
        }
        if x1 >= 0 {
            let changed = GPURect(x: rect.x + UInt32(x0), y: rect.y + UInt32(y0), width: UInt32(x1 - x0 + 1),
                                  height: UInt32(y1 - y0 + 1))
            r.dirty = r.dirty.map { $0.union(changed) } ?? changed
        }
        stats.transfers += 1
        stats.bytesTransferred += rows * rowBytes
    }

    /// Reorders pixels in place into B,G,R,X.
    static func convertToBGRX(_ p: UnsafeMutableRawPointer, pixels: Int, order: (b: Int, g: Int, r: Int, a: Int)) {
        let bytes = p.assumingMemoryBound(to: UInt8.self)
        for i in 0..<pixels {
            let px = bytes + 4 * i
            let b = px[order.b], g = px[order.g], r = px[order.r], a = px[order.a]
            px[0] = b
            px[1] = g
            px[2] = r
            px[3] = a
        }
    }

    /// Copies `count` bytes of the backing from `offset` (checked against backingLength by the caller).
    func copyFromBacking(_ r: Resource, offset: UInt64, count: Int, to dst: UnsafeMutableRawPointer,
                                 memory: GuestMemory) throws(GPUError) {
        guard let entries = r.backing else { return }
        // The last entry starting at or before offset.
        var lo = 0, hi = entries.count - 1
        while lo < hi {
            let mid = (lo + hi + 1) / 2
            if r.backingStarts[mid] <= offset { lo = mid } else { hi = mid - 1 }
        }
        var i = lo
        var at = offset - r.backingStarts[i]
        var done = 0
        while done < count {
            guard i < entries.count else {
                throw GPUError(code: VirtioGPU.Response.errInvalidParameter, reason: "read past the backing")
            }
            let e = entries[i]
            let available = Int(UInt64(e.length) - min(at, UInt64(e.length)))
            let n = min(available, count - done)
            if n > 0 {
                do {
                    try memory.copyBytes(at: GuestAddress(e.address.raw + at), count: n, to: dst + done)
                } catch {
                    // The entry was checked at attach; guest memory changed since (a new memory table).
                    throw GPUError(code: VirtioGPU.Response.errInvalidParameter, reason: "backing entry \(i): \(error)")
                }
                done += n
            }
            i += 1
            at = 0
        }
    }

    func attachBacking(id: UInt32, count: UInt32, chain: DescriptorChain, memory: GuestMemory) throws(GPUError) {
        let r = try resource(id)
        guard r.backing == nil else {
            throw GPUError(code: VirtioGPU.Response.errUnspec, reason: "resource \(id) already has backing")
        }
        guard count > 0, count <= UInt32(Self.maxBackingEntries) else {
            throw GPUError(code: VirtioGPU.Response.errInvalidParameter, reason: "\(count) backing entries")
        }
        let fixed = VirtioGPU.requestSize(VirtioGPU.Command.resourceAttachBacking)!
        let size = fixed + Int(count) * VirtioGPU.memEntrySize
        guard let bytes = try? chain.read(memory: memory, limit: size), bytes.count == size else {
            throw GPUError(code: VirtioGPU.Response.errInvalidParameter, reason: "request too short for \(count) entries")
        }
        let w = WireReader(bytes: bytes)
        var entries: [BackingEntry] = []
        var starts: [UInt64] = []
        entries.reserveCapacity(Int(count))
        var total: UInt64 = 0
        for k in 0..<Int(count) {
            let at = fixed + k * VirtioGPU.memEntrySize
            let address = GuestAddress(w.u64(at))
            let length = w.u32(at + 8)
            guard memory.contains(address, count: UInt64(length)) else {
                throw GPUError(code: VirtioGPU.Response.errInvalidParameter,
                               reason: "backing entry \(k) \(address)+\(length) is outside guest memory")
            }
            starts.append(total)
            entries.append(BackingEntry(address: address, length: length))
            total += UInt64(length)
        }
        r.backing = entries
        r.backingStarts = starts
        r.backingLength = total
    }

    func detachBacking(id: UInt32) throws(GPUError) {
        let r = try resource(id)
        guard r.backing != nil else {
            throw GPUError(code: VirtioGPU.Response.errUnspec, reason: "resource \(id) has no backing")
        }
        r.backing = nil
        r.backingStarts = []
        r.backingLength = 0
    }
}
