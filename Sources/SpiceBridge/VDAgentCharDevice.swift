import AgentProtocol
import CSpiceServer
import LinuxSystem
#if canImport(Glibc)
import Glibc
#endif

/// The "vdagent" char device (spice.md §7): the server's view of the guest's
/// com.redhat.spice.0 port, joined to that port's chardev socket.
///
/// - guest -> server (`read`): bytes from the socket, less our agent's
///   notices and what spice-server would choke on (GuestStreamFilter), are buffered, and the server is woken with
///   `spice_server_char_device_wakeup`.
/// - server -> guest (`write`): passed through MonitorsConfigRewriter (for a
///   real spice-vdagentd), queued and written without blocking; while the
///   queue is long the server is told 0 bytes were taken and is woken when the
///   socket drains (SPICE_CHAR_DEVICE_NOTIFY_WRITABLE). spice-server forwards
///   client chunks 1:1, so chunks towards the guest stay within 2048 bytes.
final class VDAgentCharDevice {
    /// The server calls us with the instance pointer only: find the device by it.
    nonisolated(unsafe) private static var devices: [UnsafeMutableRawPointer: VDAgentCharDevice] = [:]

    private let fd: Int32
    private let loop: EventLoop
    private let instance: UnsafeMutablePointer<SpiceCharDeviceInstance>
    private var watch: WatchHandle?
    /// Guest data the server has not read: `fromGuest[fromGuestHead...]`. The server reads a
    /// chunk header, then its payload, a few bytes at a time: read bytes are dropped in
    /// bulk, not shifted out of a buffer of up to a MiB at every read.
    private var fromGuest: [UInt8] = []
    private var fromGuestHead = 0
    private var unreadFromGuest: Int { fromGuest.count - fromGuestHead }
    private var registered = false
    /// Guest data is held back past this much until the server reads it (back-pressure on the port).
    static let bufferLimit = 1 << 20
    /// Server data for the guest not yet taken by the port.
    private var toGuest: [UInt8] = []
    static let toGuestLimit = 64 << 10
    private var rewriter = MonitorsConfigRewriter()
    /// Our agent's notices to hostvmm, and chunks spice-server would drop the
    /// agent for, are taken out of the guest's stream here.
    private var guestFilter = GuestStreamFilter()
    var onNotice: ([UInt8]) -> Void = { _ in }
    var onDropped: (String) -> Void = { _ in }

    init(fd: Int32, loop: EventLoop) {
        self.fd = fd
        self.loop = loop
        Syscall.setNonBlocking(fd)
        instance = UnsafeMutablePointer<SpiceCharDeviceInstance>.allocate(capacity: 1)
        instance.initialize(to: SpiceCharDeviceInstance())
        instance.pointee.base.sif = UnsafeRawPointer(Self.interface).assumingMemoryBound(to: SpiceBaseInterface.self)
        instance.pointee.subtype = UnsafePointer(Self.subtype)
        Self.devices[UnsafeMutableRawPointer(instance)] = self
    }

    deinit {
        Self.devices[UnsafeMutableRawPointer(instance)] = nil
        instance.deallocate()
    }

    func register(with server: OpaquePointer) {
        guard !registered else { return }
        registered = true
        spice_server_add_interface(server, &instance.pointee.base)
        watch = try? loop.watch(fd: fd, events: .read) { [weak self] events in
            if events.contains(.write) { self?.writable() }
            if !events.isDisjoint(with: [.read, .hangup, .error]) { self?.readable() }
        }
    }

    func unregister() {
        guard registered else { return }
        registered = false
        if let watch { loop.remove(watch) }
        watch = nil
        spice_server_remove_interface(&instance.pointee.base)
    }

    private func readable() {
        if unreadFromGuest >= Self.bufferLimit {
            // Stop reading until the server drains what it has.
            if let watch { loop.update(watch, events: []) }
            return
        }
        switch Syscall.readSome(fd: fd) {
        case .data(let bytes):
            let split = guestFilter.feed(bytes)
            for why in split.dropped { onDropped(why) }
            for notice in split.notices { onNotice(notice) }
            guard !split.passThrough.isEmpty else { return }
            fromGuest += split.passThrough
            spice_server_char_device_wakeup(instance)
        case .wouldBlock:
            break
        case .endOfStream, .failed:
            if let watch { loop.remove(watch) }
            watch = nil
        }
    }

    private func serverReads(into buffer: UnsafeMutablePointer<UInt8>, max: Int) -> Int {
        let n = min(max, unreadFromGuest)
        guard n > 0 else { return 0 }
        fromGuest.withUnsafeBufferPointer { buffer.update(from: $0.baseAddress! + fromGuestHead, count: n) }
        fromGuestHead += n
        if fromGuestHead == fromGuest.count {
            fromGuest.removeAll(keepingCapacity: true)
            fromGuestHead = 0
        } else if fromGuestHead >= 64 << 10 && fromGuestHead * 2 >= fromGuest.count {
            fromGuest.removeFirst(fromGuestHead)  // at most once per half of what was buffered
            fromGuestHead = 0
        }
        if let watch, unreadFromGuest < Self.bufferLimit { loop.update(watch, events: .read) }
        return n
    }

    /// Accepts the server's bytes into `toGuest` (through the MONITORS_CONFIG
    /// rewriter, which may change their length) while that queue is short;
    /// a long queue pushes back on the server until the port drains.
    private func serverWrites(from buffer: UnsafePointer<UInt8>, count: Int) -> Int {
        guard flushToGuest() else { return -1 }
        guard toGuest.count < Self.toGuestLimit else { return 0 }
        toGuest += rewriter.feed(Array(UnsafeBufferPointer(start: buffer, count: count)))
        guard flushToGuest() else { return -1 }
        return count
    }

    /// Writes what it can of `toGuest`; false on a hard error of the socket.
    private func flushToGuest() -> Bool {
        while !toGuest.isEmpty {
            let n = toGuest.withUnsafeBufferPointer { p in Syscall.retrying { write(fd, p.baseAddress!, p.count) } }
            if n > 0 {
                toGuest.removeFirst(n)
                continue
            }
            if n < 0 && errno != EAGAIN && errno != EWOULDBLOCK { return false }
            waitForWritable()
            return true
        }
        return true
    }

    private func waitForWritable() {
        guard let watch else { return }
        loop.update(watch, events: [.read, .write])
    }

    /// The port drained: finish the queue, then let the server write again.
    private func writable() {
        if let watch { loop.update(watch, events: .read) }
        guard flushToGuest() else { return }
        if toGuest.isEmpty && registered { spice_server_char_device_wakeup(instance) }
    }

    // MARK: - The C interface

    nonisolated(unsafe) private static let subtype = strdup("vdagent")!

    nonisolated(unsafe) private static let interface: UnsafeMutablePointer<SpiceCharDeviceInterface> = {
        let p = UnsafeMutablePointer<SpiceCharDeviceInterface>.allocate(capacity: 1)
        p.initialize(to: SpiceCharDeviceInterface())
        p.pointee.base = baseInterface(SPICE_INTERFACE_CHAR_DEVICE, "hostvmm vdagent port",
                                       SPICE_INTERFACE_CHAR_DEVICE_MAJOR, SPICE_INTERFACE_CHAR_DEVICE_MINOR)
        p.pointee.flags = SPICE_CHAR_DEVICE_NOTIFY_WRITABLE
        p.pointee.state = { _, _ in }
        p.pointee.write = { sin, buf, len in
            guard let sin, let buf, len > 0, let dev = devices[UnsafeMutableRawPointer(sin)] else { return 0 }
            return Int32(dev.serverWrites(from: buf, count: Int(len)))
        }
        p.pointee.read = { sin, buf, len in
            guard let sin, let buf, len > 0, let dev = devices[UnsafeMutableRawPointer(sin)] else { return 0 }
            return Int32(dev.serverReads(into: buf, max: Int(len)))
        }
        p.pointee.event = { _, _ in }
        return p
    }()
}
