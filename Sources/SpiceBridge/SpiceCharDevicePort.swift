import CSpiceServer
#if canImport(Glibc)
import Glibc
#endif

/// What spice-server calls a char device for, once it is registered. The
/// devices (vdagent, usbredir) implement it; SpiceCharDevicePort connects them.
protocol SpiceCharDeviceHandler: AnyObject {
    /// Bytes from the client for the device; returns how many were taken (0: none now,
    /// the device calls `wakeup()` when it can take more: SPICE_CHAR_DEVICE_NOTIFY_WRITABLE).
    func serverWrites(from buffer: UnsafePointer<UInt8>, count: Int) -> Int
    /// Copies up to `max` of the device's bytes for the client; returns how many.
    func serverReads(into buffer: UnsafeMutablePointer<UInt8>, max: Int) -> Int
    /// A client opened (true) or closed (false) the device's channel.
    func clientState(_ connected: Bool)
}

/// One SpiceCharDeviceInstance of a subtype ("vdagent", "usbredir"): its
/// registration with the server, wakeups, and the C interface, which finds the
/// handler by the instance pointer (the server passes nothing else).
final class SpiceCharDevicePort {
    private struct WeakHandler { weak var handler: SpiceCharDeviceHandler? }
    nonisolated(unsafe) private static var handlers: [UnsafeMutableRawPointer: WeakHandler] = [:]

    private let instance: UnsafeMutablePointer<SpiceCharDeviceInstance>
    private let subtype: UnsafeMutablePointer<CChar>
    private(set) var registered = false

    init(subtype: String, handler: SpiceCharDeviceHandler) {
        self.subtype = strdup(subtype)!
        instance = UnsafeMutablePointer<SpiceCharDeviceInstance>.allocate(capacity: 1)
        instance.initialize(to: SpiceCharDeviceInstance())
        instance.pointee.base.sif = UnsafeRawPointer(Self.interface).assumingMemoryBound(to: SpiceBaseInterface.self)
        instance.pointee.subtype = UnsafePointer(self.subtype)
        Self.handlers[UnsafeMutableRawPointer(instance)] = WeakHandler(handler: handler)
    }

    /// After `unregister()`: the server keeps the instance pointer until then.
    deinit {
        Self.handlers[UnsafeMutableRawPointer(instance)] = nil
        instance.deallocate()
        free(subtype)
    }

    func register(with server: OpaquePointer) {
        guard !registered else { return }
        registered = true
        spice_server_add_interface(server, &instance.pointee.base)
    }

    func unregister() {
        guard registered else { return }
        registered = false
        spice_server_remove_interface(&instance.pointee.base)
    }

    /// The device has bytes for the server, or can take its bytes again.
    func wakeup() {
        guard registered else { return }
        spice_server_char_device_wakeup(instance)
    }

    private static func handler(_ sin: UnsafeMutablePointer<SpiceCharDeviceInstance>?) -> SpiceCharDeviceHandler? {
        guard let sin else { return nil }
        return handlers[UnsafeMutableRawPointer(sin)]?.handler
    }

    nonisolated(unsafe) private static let interface: UnsafeMutablePointer<SpiceCharDeviceInterface> = {
        let p = UnsafeMutablePointer<SpiceCharDeviceInterface>.allocate(capacity: 1)
        p.initialize(to: SpiceCharDeviceInterface())
        p.pointee.base = baseInterface(SPICE_INTERFACE_CHAR_DEVICE, "hostvmm char device",
                                       SPICE_INTERFACE_CHAR_DEVICE_MAJOR, SPICE_INTERFACE_CHAR_DEVICE_MINOR)
        p.pointee.flags = SPICE_CHAR_DEVICE_NOTIFY_WRITABLE
        p.pointee.state = { sin, connected in handler(sin)?.clientState(connected != 0) }
        p.pointee.write = { sin, buf, len in
            guard let buf, len > 0, let h = handler(sin) else { return 0 }
            return Int32(h.serverWrites(from: buf, count: Int(len)))
        }
        p.pointee.read = { sin, buf, len in
            guard let buf, len > 0, let h = handler(sin) else { return 0 }
            return Int32(h.serverReads(into: buf, max: Int(len)))
        }
        p.pointee.event = { _, _ in }
        return p
    }()
}

/// Bytes waiting for the server to read them. The server reads a few bytes at a
/// time (a chunk header, then its payload): taken bytes are dropped in bulk, not
/// shifted out of a buffer of up to a MiB at every read.
struct ServerReadQueue {
    private var bytes: [UInt8] = []
    private var head = 0

    var count: Int { bytes.count - head }

    mutating func append(_ more: [UInt8]) { bytes += more }

    mutating func take(into buffer: UnsafeMutablePointer<UInt8>, max: Int) -> Int {
        let n = Swift.min(max, count)
        guard n > 0 else { return 0 }
        bytes.withUnsafeBufferPointer { buffer.update(from: $0.baseAddress! + head, count: n) }
        head += n
        if head == bytes.count {
            bytes.removeAll(keepingCapacity: true)
            head = 0
        } else if head >= 64 << 10 && head * 2 >= bytes.count {
            bytes.removeFirst(head)  // at most once per half of what was queued
            head = 0
        }
        return n
    }

    mutating func removeAll() {
        bytes = []
        head = 0
    }
}
