import CLinuxSupport
import LinuxSystem
#if canImport(Glibc)
import Glibc
#endif

/// The backend side of vhost-user for one device: it listens on a Unix socket,
/// serves one frontend (QEMU) connection at a time, maps guest memory from the
/// memory table, runs the device's split virtqueues and signals the guest
/// through the call eventfds (QEMU docs/interop/vhost-user.rst).
///
/// Threading: everything runs on hostvmm's `EventLoop` thread: the socket,
/// the kick eventfds, and the device's own calls (input arrives from the
/// SPICE server, which also runs on that loop). Input devices move a few
/// hundred bytes a second, so one thread with no locks is the simplest correct
/// design; a device that needs throughput (a GPU) can run a backend on its own
/// loop thread later without changing this type.
///
/// Ring states ("Ring states"): a ring starts when its kick fd arrives with
/// its size and addresses known (as libvhost-user does; the spec's "start on
/// the first kick" is then also satisfied), stops on GET_VRING_BASE.
/// Enabled/disabled is tracked separately (SET_VRING_ENABLE, or all enabled
/// when the frontend does not negotiate VHOST_USER_F_PROTOCOL_FEATURES).
///
/// A broken queue (hostile descriptors, see `VirtqueueError`) marks the whole
/// device broken: it stops touching guest memory, signals the queue's error
/// eventfd (QEMU logs "vhost vring error"), and reports once through
/// `onBroken`. It recovers when the driver resets the device (all rings
/// stopped) or the frontend reconnects. Other devices are not affected.
///
/// Reconnection: when the frontend disconnects, all rings stop, memory is
/// unmapped, the device is reset, and the listener accepts the next frontend.
public final class VhostUserBackend: VirtioQueueAccess {
    /// VHOST_USER_F_PROTOCOL_FEATURES (bit 30 of the virtio feature word).
    public static let protocolFeaturesBit: UInt64 = 1 << 30
    public static let offeredProtocolFeatures = VhostUserProtocolFeature.multiQueue
        | VhostUserProtocolFeature.replyAck | VhostUserProtocolFeature.config | VhostUserProtocolFeature.resetDevice

    public let name: String
    public let device: VirtioDeviceBackend
    private let loop: EventLoop
    private var listenFD: Int32 = -1
    private var listenWatch: WatchHandle?
    private var socketPath: String?
    private var channel: VhostUserChannel?
    private var channelWatch: WatchHandle?
    private var memory: GuestMemory?
    private var vrings: [Vring]
    private var ackedFeatures: UInt64 = 0
    private var ackedProtocolFeatures: UInt64 = 0
    public private(set) var brokenReason: String?
    /// Connections accepted so far (a reconnect makes it 2).
    public private(set) var connectionCount = 0

    /// Progress and protocol problems, for a log line.
    public var onLog: (String) -> Void = { _ in }
    /// The device became broken (once per breakage), with the reason.
    public var onBroken: (String) -> Void = { _ in }
    public var onConnection: (Bool) -> Void = { _ in }

    struct Vring {
        var size = 0
        var address: VhostUserPayload.VringAddress?
        var base: UInt16 = 0
        var kickFD: Int32 = -1
        var kickWatch: WatchHandle?
        var callFD: Int32 = -1
        var errFD: Int32 = -1
        var enabled = false
        /// Non-nil while the ring is started.
        var queue: SplitVirtqueue?
    }

    public init(name: String, device: VirtioDeviceBackend, loop: EventLoop) {
        self.name = name
        self.device = device
        self.loop = loop
        vrings = Array(repeating: Vring(), count: device.queueCount)
        device.attach(self)
    }

    public var offeredFeatures: UInt64 {
        device.deviceFeatures | VirtioFeature.version1 | VirtioFeature.eventIndex | VirtioFeature.indirectDescriptors
            | Self.protocolFeaturesBit
    }

    public var isConnected: Bool { channel != nil }

    // MARK: - Sockets

    /// Listens on `path` (0600, replacing a stale socket). Call on the loop thread, before the frontend starts.
    public func listen(path: String) throws(SystemError) {
        let fd = try UnixSocket.listen(path: path, backlog: 2)
        Syscall.setNonBlocking(fd)
        listenFD = fd
        socketPath = path
        listenWatch = try loop.watch(fd: fd, events: .read) { [unowned self] _ in
            guard let client = try? UnixSocket.accept(fd) else { return }
            self.serve(fd: client)
        }
    }

    /// Serves an already connected socket (the listener's, or one end of a socketpair in tests).
    /// A new connection replaces the current one: the old frontend is gone (QEMU restarted).
    public func serve(fd: Int32) {
        if channel != nil {
            onLog("\(name): a new frontend connected; dropping the previous connection")
            disconnect()
        }
        let ch = VhostUserChannel(fd: fd)
        do {
            channelWatch = try loop.watch(fd: fd, events: .read) { [unowned self] _ in self.readMessages() }
        } catch {
            onLog("\(name): \(error)")
            return
        }
        channel = ch
        connectionCount += 1
        onConnection(true)
    }

    /// Stops listening and drops the connection.
    public func close() {
        disconnect()
        if let w = listenWatch { loop.remove(w) }
        listenWatch = nil
        if listenFD >= 0 { Glibc.close(listenFD) }
        listenFD = -1
        if let p = socketPath { unlink(p) }
        socketPath = nil
    }

    private func disconnect() {
        guard channel != nil else { return }
        if let w = channelWatch { loop.remove(w) }
        channelWatch = nil
        channel = nil  // closes the socket
        for i in vrings.indices {
            stopRing(i)
            if vrings[i].callFD >= 0 { Glibc.close(vrings[i].callFD) }
            if vrings[i].errFD >= 0 { Glibc.close(vrings[i].errFD) }
            vrings[i] = Vring()
        }
        memory = nil
        ackedFeatures = 0
        ackedProtocolFeatures = 0
        brokenReason = nil
        device.reset()
        onConnection(false)
    }

    private func readMessages() {
        while let ch = channel {
            switch ch.next() {
            case .wouldBlock:
                return
            case .closed:
                onLog("\(name): frontend disconnected")
                disconnect()
                return
            case .failed(let why):
                onLog("\(name): \(why); dropping the connection")
                disconnect()
                return
            case .message(let header, let payload, var fds):
                defer { for fd in fds { Glibc.close(fd) } }  // whatever the handler did not take
                do {
                    let reply = try handle(header, payload, &fds)
                    if let reply {
                        guard ch.send(VhostUserHeader.reply(to: header.request, payload: reply)) else {
                            disconnect()
                            return
                        }
                    } else if header.needsReply, ackedProtocolFeatures & VhostUserProtocolFeature.replyAck != 0 {
                        _ = ch.send(VhostUserHeader.reply(to: header.request, payload: VhostUserPayload.encode(UInt64(0))))
                    }
                } catch {
                    onLog("\(name): \(error); dropping the connection")
                    disconnect()
                    return
                }
            }
        }
    }

    // MARK: - Messages

    private func ringIndex(_ request: UInt32, _ index: UInt32) throws(VhostUserError) -> Int {
        guard Int(index) < vrings.count else { throw .badQueueIndex(request: request, index: index) }
        return Int(index)
    }

    /// Handles one message; returns the reply payload for requests that have one.
    private func handle(_ h: VhostUserHeader, _ p: [UInt8], _ fds: inout [Int32]) throws(VhostUserError) -> [UInt8]? {
        let r = h.request
        guard let request = VhostUserRequest(rawValue: r) else {
            if let d = device as? VhostUserDeviceRequests, let reply = d.handleVhostUserRequest(r, payload: p, fds: &fds) {
                return reply.isEmpty ? nil : reply
            }
            onLog("\(name): ignoring unknown request \(r)")
            return h.needsReply ? VhostUserPayload.encode(UInt64(1)) : nil
        }
        switch request {
        case .getFeatures:
            return VhostUserPayload.encode(offeredFeatures)
        case .setFeatures:
            let v = try VhostUserPayload.u64(r, p)
            guard v & ~offeredFeatures == 0 else {
                throw .protocolViolation("SET_FEATURES 0x\(String(v, radix: 16)) has bits we did not offer")
            }
            ackedFeatures = v
            if v & Self.protocolFeaturesBit == 0 {
                for i in vrings.indices { vrings[i].enabled = true }
            }
        case .getProtocolFeatures:
            return VhostUserPayload.encode(Self.offeredProtocolFeatures)
        case .setProtocolFeatures:
            let v = try VhostUserPayload.u64(r, p)
            guard v & ~Self.offeredProtocolFeatures == 0 else {
                throw .protocolViolation("SET_PROTOCOL_FEATURES 0x\(String(v, radix: 16)) has bits we did not offer")
            }
            ackedProtocolFeatures = v
        case .setOwner:
            break
        case .resetOwner:
            // Deprecated; the spec recommends treating it as "disable all rings".
            for i in vrings.indices {
                stopRing(i)
                vrings[i].enabled = false
            }
        case .resetDevice:
            for i in vrings.indices {
                stopRing(i)
                vrings[i].enabled = false
            }
            ackedFeatures = 0
            brokenReason = nil
            device.reset()
        case .getQueueNum:
            return VhostUserPayload.encode(UInt64(vrings.count))
        case .setMemTable:
            try setMemTable(r, p, &fds)
        case .setVringNum:
            let s = try VhostUserPayload.vringState(r, p)
            let i = try ringIndex(r, s.index)
            guard s.num > 0, s.num <= UInt32(SplitVirtqueue.maxSize), s.num & (s.num - 1) == 0 else {
                throw .badPayload(request: r, reason: "queue size \(s.num)")
            }
            vrings[i].size = Int(s.num)
        case .setVringAddr:
            let a = try VhostUserPayload.vringAddress(r, p)
            let i = try ringIndex(r, a.index)
            vrings[i].address = a
            if vrings[i].queue != nil { startRing(i) }  // re-set while running: rebuild at the new place
        case .setVringBase:
            let s = try VhostUserPayload.vringState(r, p)
            let i = try ringIndex(r, s.index)
            vrings[i].base = UInt16(truncatingIfNeeded: s.num)
        case .getVringBase:
            let s = try VhostUserPayload.vringState(r, p)
            let i = try ringIndex(r, s.index)
            stopRing(i)
            if vrings.allSatisfy({ $0.queue == nil }), brokenReason != nil {
                onLog("\(name): all rings stopped; the device may be used again")
                brokenReason = nil
            }
            return VhostUserPayload.encode(VhostUserPayload.VringState(index: s.index, num: UInt32(vrings[i].base)))
        case .setVringKick, .setVringCall, .setVringErr:
            let v = try VhostUserPayload.u64(r, p)
            let i = try ringIndex(r, UInt32(v & 0xff))
            var fd: Int32 = -1
            if v & 0x100 == 0 {
                guard !fds.isEmpty else { throw .wrongFDCount(request: r, expected: 1, got: 0) }
                fd = fds.removeFirst()
            }
            switch request {
            case .setVringKick: setKick(i, fd)
            case .setVringCall:
                if vrings[i].callFD >= 0 { Glibc.close(vrings[i].callFD) }
                vrings[i].callFD = fd
            default:
                if vrings[i].errFD >= 0 { Glibc.close(vrings[i].errFD) }
                vrings[i].errFD = fd
            }
        case .setVringEnable:
            let s = try VhostUserPayload.vringState(r, p)
            let i = try ringIndex(r, s.index)
            vrings[i].enabled = s.num != 0
            if vrings[i].enabled, vrings[i].queue != nil { device.queueNotified(i) }
        case .getConfig:
            let c = try VhostUserPayload.config(r, p, withData: false)
            guard Int(c.offset) + Int(c.size) <= device.configSize else {
                onLog("\(name): GET_CONFIG \(c.offset)+\(c.size) outside the config space")
                return []  // "zero length of payload to indicate an error"
            }
            var reply = c
            reply.payload = device.readConfig(offset: Int(c.offset), count: Int(c.size))
            return VhostUserPayload.encode(reply)
        case .setConfig:
            let c = try VhostUserPayload.config(r, p, withData: true)
            guard Int(c.offset) + Int(c.size) <= device.configSize else {
                throw .badPayload(request: r, reason: "SET_CONFIG \(c.offset)+\(c.size) outside the config space")
            }
            // flags 0: a driver write (the device keeps read-only fields); 1: migration, which we do not do.
            guard c.flags == 0 else { throw .badPayload(request: r, reason: "SET_CONFIG flags \(c.flags)") }
            device.writeConfig(offset: Int(c.offset), bytes: c.payload)
        case .setLogBase, .setLogFD, .getMaxMemSlots, .setStatus, .getStatus:
            // Gated by features we do not offer.
            onLog("\(name): ignoring request \(request) (not negotiated)")
            return h.needsReply ? VhostUserPayload.encode(UInt64(1)) : nil
        }
        return nil
    }

    private func setMemTable(_ r: UInt32, _ p: [UInt8], _ fds: inout [Int32]) throws(VhostUserError) {
        let regions = try VhostUserPayload.memoryTable(r, p)
        guard fds.count == regions.count else { throw .wrongFDCount(request: r, expected: regions.count, got: fds.count) }
        let table = Array(zip(regions, fds)).map { (spec: $0.0, fd: $0.1) }
        let newMemory: GuestMemory
        do {
            newMemory = try GuestMemory(table: table)
        } catch {
            throw .badPayload(request: r, reason: error.description)
        }
        // The mappings hold the files; the descriptors are closed by the caller.
        memory = newMemory
        onLog("\(name): guest memory: " + regions.map {
            "0x\(String($0.guestAddress, radix: 16))+\($0.size >> 20)M"
        }.joined(separator: ", "))
        for i in vrings.indices where vrings[i].queue != nil { startRing(i) }
    }

    // MARK: - Rings

    private func setKick(_ i: Int, _ fd: Int32) {
        stopRing(i)
        vrings[i].kickFD = fd
        startRing(i)
    }

    /// (Re)starts ring `i` if it has everything: memory, size, addresses and a kick fd.
    private func startRing(_ i: Int) {
        let last = vrings[i].queue?.lastAvailIndex ?? vrings[i].base
        if let w = vrings[i].kickWatch { loop.remove(w) }
        vrings[i].kickWatch = nil
        vrings[i].queue = nil
        guard let memory, let a = vrings[i].address, vrings[i].size > 0, vrings[i].kickFD >= 0 else { return }
        let n = UInt64(vrings[i].size)
        do {
            let desc = try memory.guestAddress(forUserAddress: a.descriptor, count: 16 * n)
            let avail = try memory.guestAddress(forUserAddress: a.available, count: 6 + 2 * n)
            let used = try memory.guestAddress(forUserAddress: a.used, count: 6 + 8 * n)
            let q = try SplitVirtqueue(index: i, size: vrings[i].size, descriptorTable: desc, availRing: avail,
                                       usedRing: used, memory: memory,
                                       eventIndex: ackedFeatures & VirtioFeature.eventIndex != 0,
                                       indirectDescriptors: ackedFeatures & VirtioFeature.indirectDescriptors != 0,
                                       lastAvailIndex: last, maxChainBytes: device.maxChainBytes)
            vrings[i].queue = q
        } catch let e as VirtqueueError {
            markBroken(queue: i, e.description)
            return
        } catch {
            markBroken(queue: i, "queue \(i): ring addresses: \(error)")
            return
        }
        let fd = vrings[i].kickFD
        vrings[i].kickWatch = try? loop.watch(fd: fd, events: .read) { [unowned self] _ in
            var counter: UInt64 = 0
            _ = read(fd, &counter, 8)
            guard let q = self.vrings[i].queue, self.brokenReason == nil else { return }
            if self.corruptOnKick.remove(i) != nil { _ = q._corruptNextChainForTesting() }
            self.device.queueNotified(i)
        }
        if brokenReason == nil { device.queueNotified(i) }
    }

    /// Stops ring `i`, remembering where it was (for GET_VRING_BASE), and drops its kick fd.
    private func stopRing(_ i: Int) {
        if let q = vrings[i].queue { vrings[i].base = q.lastAvailIndex }
        vrings[i].queue = nil
        if let w = vrings[i].kickWatch { loop.remove(w) }
        vrings[i].kickWatch = nil
        if vrings[i].kickFD >= 0 { Glibc.close(vrings[i].kickFD) }
        vrings[i].kickFD = -1
    }

    private func markBroken(queue i: Int, _ reason: String) {
        guard brokenReason == nil else { return }
        brokenReason = reason
        onLog("\(name): device broken: \(reason); it stays stopped until the guest resets it")
        if vrings[i].errFD >= 0 { signal(vrings[i].errFD) }
        onBroken(reason)
    }

    private func signal(_ fd: Int32) {
        var one: UInt64 = 1
        _ = write(fd, &one, 8)
    }

    // MARK: - VirtioQueueAccess

    public func queue(_ index: Int) -> SplitVirtqueue? {
        guard brokenReason == nil, vrings.indices.contains(index) else { return nil }
        return vrings[index].queue
    }

    public func isEnabled(_ index: Int) -> Bool {
        vrings.indices.contains(index) && vrings[index].enabled
    }

    public func notify(_ index: Int) {
        guard vrings.indices.contains(index), let q = vrings[index].queue else { return }
        if let e = q.broken {
            markBroken(queue: index, e.description)
            return
        }
        if q.needsNotification(), vrings[index].callFD >= 0 { signal(vrings[index].callFD) }
    }

    /// Test hook (the control API's `input-debug-corrupt`): makes the next chain on
    /// queue `index` loop, as a hostile driver would, to exercise the broken path.
    public func _corruptNextChainForTesting(queue index: Int) -> Bool {
        queue(index)?._corruptNextChainForTesting() ?? false
    }

    /// Test hook for queues whose chains the device takes at once (a sound device's tx):
    /// the chain the driver makes available next is corrupted as above when its kick arrives.
    public func _corruptChainAtNextKickForTesting(queue index: Int) {
        corruptOnKick.insert(index)
    }
    private var corruptOnKick = Set<Int>()
}
