import CSpiceServer
import LinuxSystem
#if canImport(Glibc)
import Glibc
#endif

/// libspice-server's core interface (spice.md §2) on hostvmm's event loop:
/// fd watches and one-shot timers. The server hands us C function pointers and
/// an opaque per watch/timer; we keep each as a retained box whose address is
/// the handle the server holds.
///
/// Threading: with 0.15.1 every call arrives on the loop thread (spice.md §2,
/// verified); a call from elsewhere is moved onto the loop with `execute`.
enum SpiceCore {
    /// The loop the core interface uses: one SPICE server per hostvmm process.
    nonisolated(unsafe) static var loop: EventLoop?
    /// Channel events, delivered on the loop thread.
    nonisolated(unsafe) static var onChannelEvent: ((SpiceChannelEvent) -> Void)?

    final class Watch: @unchecked Sendable {
        let fd: Int32
        var mask: Int32
        let callback: SpiceWatchFunc
        let opaque: UnsafeMutableRawPointer?
        var handle: WatchHandle?
        var removed = false
        init(fd: Int32, mask: Int32, callback: SpiceWatchFunc, opaque: UnsafeMutableRawPointer?) {
            self.fd = fd
            self.mask = mask
            self.callback = callback
            self.opaque = opaque
        }
    }

    final class Timer: @unchecked Sendable {
        let callback: SpiceTimerFunc
        let opaque: UnsafeMutableRawPointer?
        var handle: TimerHandle?
        init(callback: SpiceTimerFunc, opaque: UnsafeMutableRawPointer?) {
            self.callback = callback
            self.opaque = opaque
        }
    }

    /// Runs `body` on the loop thread: now if we are on it, else queued.
    static func onLoop(_ body: @escaping @Sendable () -> Void) {
        guard let loop else { return }
        if loop.inLoopThread { body() } else { loop.execute(body) }
    }

    static func events(_ mask: Int32) -> IOEvents {
        var e: IOEvents = []
        if mask & SPICE_WATCH_EVENT_READ != 0 { e.insert(.read) }
        if mask & SPICE_WATCH_EVENT_WRITE != 0 { e.insert(.write) }
        return e
    }

    static func arm(_ w: Watch) {
        guard let loop, !w.removed else { return }
        if let h = w.handle {
            loop.update(h, events: events(w.mask))
            return
        }
        w.handle = try? loop.watch(fd: w.fd, events: events(w.mask)) { [unowned w] ready in
            // Held strongly for the whole call: a callback that hits a dead peer removes
            // its own watch (watch_remove releases the server's box at once on this
            // thread), and the `removed` check below must still read a live object.
            let w = w
            // One event bit per call, as the interface expects; errors count as readable.
            if ready.contains(.write) && w.mask & SPICE_WATCH_EVENT_WRITE != 0 {
                w.callback(w.fd, SPICE_WATCH_EVENT_WRITE, w.opaque)
            }
            if !w.removed, !ready.isDisjoint(with: [.read, .hangup, .error]), w.mask & SPICE_WATCH_EVENT_READ != 0 {
                w.callback(w.fd, SPICE_WATCH_EVENT_READ, w.opaque)
            }
        }
    }

    /// The interface table. Static storage: the server keeps the pointer.
    nonisolated(unsafe) static let interface: UnsafeMutablePointer<SpiceCoreInterface> = {
        let p = UnsafeMutablePointer<SpiceCoreInterface>.allocate(capacity: 1)
        p.initialize(to: SpiceCoreInterface())
        p.pointee.base = baseInterface(SPICE_INTERFACE_CORE, "hostvmm event loop",
                                       SPICE_INTERFACE_CORE_MAJOR, SPICE_INTERFACE_CORE_MINOR)

        p.pointee.timer_add = { callback, opaque in
            guard let callback else { return nil }
            let t = Timer(callback: callback, opaque: opaque)
            return OpaquePointer(Unmanaged.passRetained(t).toOpaque())
        }
        p.pointee.timer_start = { raw, ms in
            guard let raw else { return }
            let t = Unmanaged<Timer>.fromOpaque(UnsafeRawPointer(raw)).takeUnretainedValue()
            onLoop {
                loop?.cancel(t.handle)
                t.handle = loop?.schedule(afterMilliseconds: UInt64(ms)) { [unowned t] in
                    t.handle = nil
                    t.callback(t.opaque)
                }
            }
        }
        p.pointee.timer_cancel = { raw in
            guard let raw else { return }
            let t = Unmanaged<Timer>.fromOpaque(UnsafeRawPointer(raw)).takeUnretainedValue()
            onLoop {
                loop?.cancel(t.handle)
                t.handle = nil
            }
        }
        p.pointee.timer_remove = { raw in
            guard let raw else { return }
            let box = Unmanaged<Timer>.fromOpaque(UnsafeRawPointer(raw))
            let t = box.takeUnretainedValue()
            onLoop {
                loop?.cancel(t.handle)
                t.handle = nil
                box.release()
            }
        }
        p.pointee.watch_add = { fd, mask, callback, opaque in
            guard let callback else { return nil }
            let w = Watch(fd: fd, mask: mask, callback: callback, opaque: opaque)
            onLoop { arm(w) }
            return OpaquePointer(Unmanaged.passRetained(w).toOpaque())
        }
        p.pointee.watch_update_mask = { raw, mask in
            guard let raw else { return }
            let w = Unmanaged<Watch>.fromOpaque(UnsafeRawPointer(raw)).takeUnretainedValue()
            onLoop {
                w.mask = mask
                arm(w)
            }
        }
        p.pointee.watch_remove = { raw in
            guard let raw else { return }
            let box = Unmanaged<Watch>.fromOpaque(UnsafeRawPointer(raw))
            let w = box.takeUnretainedValue()
            w.removed = true
            onLoop {
                if let h = w.handle { loop?.remove(h) }
                w.handle = nil
                box.release()
            }
        }
        p.pointee.channel_event = { event, info in
            guard let info else { return }
            let e = SpiceChannelEvent(event: event, info: info.pointee)
            onLoop { onChannelEvent?(e) }
        }
        return p
    }()
}

/// A client connecting or leaving, from `channel_event`.
public struct SpiceChannelEvent: Sendable {
    public enum Kind: String, Sendable {
        case connected, initialized, disconnected
    }

    public var kind: Kind
    public var channelType: Int32
    public var connectionID: Int32
    /// The client's address ("127.0.0.1:50012", or "unix" for a unix socket).
    public var peer: String

    init(event: Int32, info: SpiceChannelEventInfo) {
        switch event {
        case SPICE_CHANNEL_EVENT_CONNECTED: kind = .connected
        case SPICE_CHANNEL_EVENT_INITIALIZED: kind = .initialized
        default: kind = .disconnected
        }
        channelType = info.type
        connectionID = info.connection_id
        var storage = info.paddr_ext
        peer = SpiceChannelEvent.format(&storage, length: info.plen_ext)
    }

    /// The main channel is the client's session; the others come and go with it.
    public var isMainChannel: Bool { channelType == 1 }

    static func format(_ storage: inout sockaddr_storage, length: socklen_t) -> String {
        var host = [CChar](repeating: 0, count: 64)
        switch Int32(storage.ss_family) {
        case AF_INET:
            return withUnsafePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { sin in
                    var a = sin.pointee.sin_addr
                    inet_ntop(AF_INET, &a, &host, socklen_t(host.count))
                    return "\(String(cString: host)):\(UInt16(bigEndian: sin.pointee.sin_port))"
                }
            }
        case AF_INET6:
            return withUnsafePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { sin6 in
                    var a = sin6.pointee.sin6_addr
                    inet_ntop(AF_INET6, &a, &host, socklen_t(host.count))
                    return "[\(String(cString: host))]:\(UInt16(bigEndian: sin6.pointee.sin6_port))"
                }
            }
        case AF_UNIX:
            return "unix"
        default:
            return "unknown"
        }
    }
}

/// The header every interface table starts with. The strings live as long as
/// the process, as the tables do: the server keeps pointers to them.
func baseInterface(_ type: String, _ description: String, _ major: Int32, _ minor: Int32) -> SpiceBaseInterface {
    SpiceBaseInterface(type: UnsafePointer(strdup(type)), description: UnsafePointer(strdup(description)),
                       major_version: UInt32(major), minor_version: UInt32(minor))
}
