import VirtioCore

/// Where a virtio-snd device's sound goes and comes from (hostvmm wires SPICE
/// and PulseAudio here). Samples are `HostPCM`: 48 kHz, stereo, S16, interleaved.
/// Called on the device's thread.
public protocol VirtioSoundHost: AnyObject {
    /// The guest started or stopped its output (playback) or input (capture) stream.
    func streamChanged(direction: VirtioSound.Direction, running: Bool)
    /// Sound the guest played, paced in real time.
    func play(_ samples: [Int16])
    /// Up to `frames` frames of captured sound (fewer when the source has none yet: the rest is silence).
    func capture(frames: Int) -> [Int16]
}

/// A virtio-snd device (virtio spec 1.2 §5.14; Linux `virtio_snd`) with one
/// output stream (id 0) and one input stream (id 1), no jacks and no channel
/// maps. Formats S16/S32/FLOAT, 1 or 2 channels, 8-96 kHz are offered and
/// converted to and from `HostPCM`.
///
/// Every request is checked: a malformed or out-of-order control request gets
/// VIRTIO_SND_S_BAD_MSG, an unsupported one VIRTIO_SND_S_NOT_SUPP, a bad
/// transfer its buffer back with BAD_MSG; hostile descriptor chains break the
/// device through VirtioCore (the backend reports it), never the host.
///
/// Timing: the host sets `clock` and calls `tick(now:)` (milliseconds) while
/// `needsTicks` is true, every 10 ms or so; see `PCMStream` for how the clock
/// moves buffers. Output buffers that arrive before START (the guest's
/// pre-fill) wait for it; RELEASE and PREPARE return every buffer the stream
/// still holds before they answer, as the Linux driver waits for them.
/// Threading: everything on the thread that runs the backend.
public final class VirtioSoundDevice: VirtioDeviceBackend {
    public static let outputStream = 0
    public static let inputStream = 1
    /// Largest buffer (and so period) a guest may set: 4 MiB is ~20 s of 48 kHz stereo S16.
    public static let maxBufferBytes = 4 << 20
    /// How far playback runs ahead of real time: one SPICE frame, so sound starts at START.
    public static let outputLeadMs: UInt64 = 10

    public weak var host: VirtioSoundHost?
    public var onLog: (String) -> Void = { _ in }
    /// `needsTicks` changed: the host starts or stops its timer.
    public var onTicksNeeded: (Bool) -> Void = { _ in }

    let streams = [PCMStream(id: outputStream, direction: .output), PCMStream(id: inputStream, direction: .input)]
    private weak var queues: VirtioQueueAccess?
    public private(set) var badRequests = 0
    public private(set) var lastError: String?

    /// Test hooks (hostvmm's `audio-debug-corrupt`, HOSTVMM_TEST_HOOKS=1 only): the
    /// next N control requests, or tx transfers, are altered as a hostile driver
    /// would write them, one kind after another, so a real guest's requests can
    /// show each kind's error status. Control: cut to 2 bytes, an unknown code, a
    /// stream or item id out of range. Tx: another stream's id, a torn frame.
    public var corruptNextRequests = 0
    public var corruptNextTransfers = 0
    private var corruptedRequests = 0
    private var corruptedTransfers = 0

    public init() {}

    public var needsTicks: Bool { streams.contains { $0.isRunning } }

    // MARK: - VirtioDeviceBackend

    public var deviceFeatures: UInt64 { 0 }
    public var queueCount: Int { 4 }
    public var configSize: Int { VirtioSound.configSize }
    public var maxChainBytes: UInt64 { UInt64(Self.maxBufferBytes) + 4096 }

    public func attach(_ queues: VirtioQueueAccess) { self.queues = queues }

    public func readConfig(offset: Int, count: Int) -> [UInt8] {
        var config: [UInt8] = []
        config.appendLE(UInt32(0))  // jacks
        config.appendLE(UInt32(streams.count))
        config.appendLE(UInt32(0))  // chmaps
        return Array(config[offset..<(offset + count)])
    }

    public func writeConfig(offset: Int, bytes: [UInt8]) {}  // all read-only

    public func queueNotified(_ index: Int) {
        switch index {
        case VirtioSound.controlQueue: serveControl()
        case VirtioSound.txQueue: takeTransfers(queue: index, stream: streams[Self.outputStream])
        case VirtioSound.rxQueue: takeTransfers(queue: index, stream: streams[Self.inputStream])
        default: break  // event queue: we send no events; the buffers wait
        }
    }

    public func reset() {
        let wasTicking = needsTicks
        for s in streams {
            if s.isRunning { host?.streamChanged(direction: s.direction, running: false) }
            s.state = .idle
            s.parameters = nil
            s.converter = nil
            s.pendingTx = []
            s.pendingRx = []
            s.captured = []
            s.starved = false
        }
        if wasTicking { onTicksNeeded(false) }
    }

    // MARK: - Status for `hostvmm audio`

    public struct StreamStatus: Sendable {
        public var id: Int
        public var direction: VirtioSound.Direction
        public var state: String
        public var parameters: PCMParameters?
        public var queuedBytes: Int
        public var buffersCompleted: Int
        public var bytesMoved: UInt64
        public var underruns: Int
        public var starts: Int
    }

    public var streamStatus: [StreamStatus] {
        streams.map {
            StreamStatus(id: $0.id, direction: $0.direction, state: $0.state.rawValue, parameters: $0.parameters,
                         queuedBytes: $0.queuedBytes, buffersCompleted: $0.buffersCompleted, bytesMoved: $0.bytesMoved,
                         underruns: $0.underruns, starts: $0.starts)
        }
    }

    // MARK: - Control queue

    private func serveControl() {
        guard let queues, let q = queues.queue(VirtioSound.controlQueue) else { return }
        var used = false
        while let chain = q.pop() {
            used = true
            let response: [UInt8]
            if queues.isEnabled(VirtioSound.controlQueue),
                var request = try? chain.read(memory: q.memory, limit: VirtioSound.setParamsSize)
            {
                if corruptNextRequests > 0 { request = corruptForTesting(request) }
                response = handleControl(request, room: Int(chain.writableLength))
            } else {
                response = Self.status(VirtioSound.Status.ioError)
            }
            let written = (try? chain.write(response, memory: q.memory)) ?? 0
            q.push(head: chain.head, length: UInt32(written))
        }
        if used || q.broken != nil { queues.notify(VirtioSound.controlQueue) }
    }

    static func status(_ code: UInt32) -> [UInt8] {
        var b: [UInt8] = []
        b.appendLE(code)
        return b
    }

    private func refuse(_ code: UInt32, _ why: String) -> [UInt8] {
        recordBad(why)
        return Self.status(code)
    }

    /// Counts and logs one bad request or transfer from the guest.
    private func recordBad(_ why: String) {
        badRequests += 1
        lastError = why
        onLog("sound: \(why)")
    }

    /// One control request -> its response (status, then any info structures).
    func handleControl(_ request: [UInt8], room: Int) -> [UInt8] {
        guard request.count >= VirtioSound.headerSize else { return refuse(VirtioSound.Status.badMessage, "control request shorter than its header") }
        let code = WireReader(bytes: request).u32(0)
        switch code {
        case VirtioSound.Request.jackInfo, VirtioSound.Request.pcmInfo, VirtioSound.Request.chmapInfo:
            return queryInfo(code: code, request, room: room)
        case VirtioSound.Request.pcmSetParams:
            guard request.count >= VirtioSound.setParamsSize else { return refuse(VirtioSound.Status.badMessage, "PCM_SET_PARAMS too short") }
            return setParameters(request)
        case VirtioSound.Request.pcmPrepare, VirtioSound.Request.pcmRelease, VirtioSound.Request.pcmStart,
            VirtioSound.Request.pcmStop:
            guard request.count >= VirtioSound.pcmHeaderSize else { return refuse(VirtioSound.Status.badMessage, "PCM request too short") }
            let id = WireReader(bytes: request).u32(4)
            guard id < streams.count else { return refuse(VirtioSound.Status.badMessage, "no stream \(id)") }
            return transition(streams[Int(id)], code: code)
        case VirtioSound.Request.jackRemap:
            return refuse(VirtioSound.Status.notSupported, "JACK_REMAP: this device has no jacks")
        default:
            return refuse(VirtioSound.Status.notSupported, "unknown control request 0x\(String(code, radix: 16))")
        }
    }

    private func queryInfo(code: UInt32, _ request: [UInt8], room: Int) -> [UInt8] {
        guard request.count >= VirtioSound.queryInfoSize else { return refuse(VirtioSound.Status.badMessage, "query too short") }
        let fields = WireReader(bytes: request)
        let start = Int(fields.u32(4)), count = Int(fields.u32(8)), size = Int(fields.u32(12))
        let available: Int
        let entrySize: Int
        switch code {
        case VirtioSound.Request.pcmInfo: (available, entrySize) = (streams.count, VirtioSound.pcmInfoSize)
        case VirtioSound.Request.jackInfo: (available, entrySize) = (0, 24)
        default: (available, entrySize) = (0, VirtioSound.chmapInfoSize)
        }
        guard start <= available, count <= available - start else {
            return refuse(VirtioSound.Status.badMessage, "query for items \(start)..<\(start + count) of \(available)")
        }
        guard size >= entrySize, size <= 4096 else { return refuse(VirtioSound.Status.badMessage, "query item size \(size)") }
        guard room >= VirtioSound.headerSize + count * size else {
            return refuse(VirtioSound.Status.badMessage, "query answer needs \(VirtioSound.headerSize + count * size) bytes, buffer has \(room)")
        }
        var out = Self.status(VirtioSound.Status.ok)
        for id in start..<(start + count) {
            var info: [UInt8] = []
            info.appendLE(UInt32(0))  // hda_fn_nid
            info.appendLE(UInt32(0))  // features: none
            info.appendLE(PCMFormat.offeredMask)
            info.appendLE(PCMRate.offeredMask)
            info += [streams[id].direction.rawValue, 1, 2]  // direction, channels_min, channels_max
            info += Array(repeating: 0, count: size - info.count)
            out += info
        }
        return out
    }

    private func setParameters(_ r: [UInt8]) -> [UInt8] {
        let fields = WireReader(bytes: r)
        let id = fields.u32(4)
        guard id < streams.count else { return refuse(VirtioSound.Status.badMessage, "SET_PARAMS for stream \(id)") }
        let stream = streams[Int(id)]
        let bufferBytes = Int(fields.u32(8)), periodBytes = Int(fields.u32(12)), features = fields.u32(16)
        let channels = Int(r[20])
        guard features == 0 else { return refuse(VirtioSound.Status.notSupported, "stream features 0x\(String(features, radix: 16))") }
        guard let format = PCMFormat(rawValue: r[21]) else { return refuse(VirtioSound.Status.notSupported, "PCM format \(r[21])") }
        guard let rate = PCMRate(rawValue: r[22]) else { return refuse(VirtioSound.Status.notSupported, "PCM rate \(r[22])") }
        guard (1...2).contains(channels) else { return refuse(VirtioSound.Status.notSupported, "\(channels) channels") }
        let frame = format.bytesPerSample * channels
        guard periodBytes > 0, bufferBytes >= periodBytes, bufferBytes <= Self.maxBufferBytes, periodBytes % frame == 0 else {
            return refuse(VirtioSound.Status.badMessage, "buffer \(bufferBytes) / period \(periodBytes) bytes")
        }
        guard [.idle, .parametersSet, .prepared, .released].contains(stream.state) else {
            return refuse(VirtioSound.Status.badMessage, "SET_PARAMS while stream \(id) is \(stream.state.rawValue)")
        }
        stream.parameters = PCMParameters(direction: stream.direction, format: format, rate: rate, channels: channels,
                                          bufferBytes: bufferBytes, periodBytes: periodBytes)
        stream.state = .parametersSet
        return Self.status(VirtioSound.Status.ok)
    }

    private func transition(_ s: PCMStream, code: UInt32) -> [UInt8] {
        let ok = Self.status(VirtioSound.Status.ok)
        func outOfOrder(_ what: String) -> [UInt8] {
            refuse(VirtioSound.Status.badMessage, "\(what) while stream \(s.id) is \(s.state.rawValue)")
        }
        switch code {
        case VirtioSound.Request.pcmPrepare:
            guard let params = s.parameters, [.parametersSet, .prepared, .stopped, .released].contains(s.state) else {
                return outOfOrder("PREPARE")
            }
            returnPending(s)
            s.converter = StreamConverter(params: params)
            s.captured = []
            s.state = .prepared
            return ok
        case VirtioSound.Request.pcmStart:
            guard [.prepared, .stopped].contains(s.state) else { return outOfOrder("START") }
            let wasTicking = needsTicks
            s.state = .running
            s.starts += 1
            s.starved = false
            // Output buffers the guest queued before START (its pre-fill) play from now, one
            // host frame (10 ms) ahead: the first leaves at once instead of at the next tick.
            let now = clock()
            s.restartClock(now: s.direction == .output ? now &- Self.outputLeadMs : now)
            host?.streamChanged(direction: s.direction, running: true)
            if !wasTicking { onTicksNeeded(true) }
            if s.direction == .output { playDue(s, now: now) }
            return ok
        case VirtioSound.Request.pcmStop:
            guard s.state == .running else { return outOfOrder("STOP") }
            s.state = .stopped
            host?.streamChanged(direction: s.direction, running: false)
            if !needsTicks { onTicksNeeded(false) }
            return ok
        default:  // RELEASE
            guard [.prepared, .stopped, .parametersSet].contains(s.state) else { return outOfOrder("RELEASE") }
            returnPending(s)
            s.state = .released
            return ok
        }
    }

    // MARK: - Transfers

    /// Milliseconds on the host's monotonic clock (the same one `tick(now:)` is given).
    public var clock: () -> UInt64 = { 0 }

    private func takeTransfers(queue index: Int, stream s: PCMStream) {
        guard let queues, let q = queues.queue(index) else { return }
        var completed = false
        while let chain = q.pop() {
            guard queues.isEnabled(index) else {
                q.push(head: chain.head, length: 0)
                completed = true
                continue
            }
            // One read: the header, and for playback the frames after it.
            guard chain.writableLength >= UInt64(VirtioSound.pcmStatusSize), chain.readableLength >= UInt64(VirtioSound.xferHeaderSize),
                let readable = try? chain.read(memory: q.memory, limit: s.direction == .output
                                               ? Int(chain.readableLength) : VirtioSound.xferHeaderSize)
            else {
                recordBad("a transfer without room for its header or status")
                q.push(head: chain.head, length: 0)
                completed = true
                continue
            }
            var id = WireReader(bytes: readable).u32(0)
            var torn = false
            if corruptNextTransfers > 0 {
                corruptNextTransfers -= 1
                corruptedTransfers += 1
                if corruptedTransfers % 2 == 1 { id ^= 1 } else { torn = true }
            }
            guard id == s.id, let params = s.parameters, [.prepared, .running, .stopped].contains(s.state) else {
                complete(chain, in: q, rx: s.direction == .input, status: VirtioSound.Status.badMessage, stream: nil,
                         why: "transfer for stream \(id) on the \(s.direction == .output ? "tx" : "rx") queue (stream \(s.id) is \(s.state.rawValue))")
                completed = true
                continue
            }
            if s.direction == .output {
                let dataBytes = readable.count - VirtioSound.xferHeaderSize - (torn ? 1 : 0)
                guard dataBytes % params.bytesPerFrame == 0 else {
                    complete(chain, in: q, rx: s.direction == .input, status: VirtioSound.Status.badMessage, stream: nil,
                             why: "tx buffer of \(dataBytes) bytes is not whole \(params.bytesPerFrame)-byte frames")
                    completed = true
                    continue
                }
                s.pendingTx.append(PCMStream.PendingTx(chain: chain, data: Array(readable[VirtioSound.xferHeaderSize...])))
            } else {
                let dataBytes = Int(chain.writableLength) - VirtioSound.pcmStatusSize
                guard dataBytes % params.bytesPerFrame == 0 else {
                    complete(chain, in: q, rx: s.direction == .input, status: VirtioSound.Status.badMessage, stream: nil,
                             why: "rx buffer of \(dataBytes) bytes is not whole \(params.bytesPerFrame)-byte frames")
                    completed = true
                    continue
                }
                s.pendingRx.append(chain)
            }
        }
        if completed || q.broken != nil { queues.notify(index) }
    }

    /// Returns a buffer: for rx, `data` (silence when nil) fills the data part; then the status.
    private func complete(_ chain: DescriptorChain, in q: SplitVirtqueue, rx: Bool, status: UInt32, stream: PCMStream?,
                          data: [UInt8]? = nil, why: String? = nil)
    {
        if let why { recordBad(why) }
        var bytes: [UInt8] = []
        if rx {
            let dataRoom = Int(chain.writableLength) - VirtioSound.pcmStatusSize
            bytes = data ?? Array(repeating: 0, count: max(0, dataRoom))
        }
        bytes.appendLE(status)
        bytes.appendLE(UInt32(stream?.queuedBytes ?? 0))
        let written = (try? chain.write(bytes, memory: q.memory)) ?? 0
        q.push(head: chain.head, length: UInt32(written))
    }

    /// RELEASE or PREPARE again: every buffer the stream holds goes back to the guest.
    private func returnPending(_ s: PCMStream) {
        guard let queues else { return }
        let index = s.direction == .output ? VirtioSound.txQueue : VirtioSound.rxQueue
        guard let q = queues.queue(index) else {
            s.pendingTx = []
            s.pendingRx = []
            return
        }
        let chains = s.pendingTx.map(\.chain) + s.pendingRx
        s.pendingTx = []
        s.pendingRx = []
        for chain in chains { complete(chain, in: q, rx: s.direction == .input, status: VirtioSound.Status.ok, stream: s) }
        if !chains.isEmpty { queues.notify(index) }
    }

    private func corruptForTesting(_ request: [UInt8]) -> [UInt8] {
        corruptNextRequests -= 1
        corruptedRequests += 1
        var r = request
        switch corruptedRequests % 3 {
        case 1: return Array(r.prefix(2))
        case 2: r.replaceSubrange(0..<4, with: [0x99, 0x09, 0, 0])
        default: if r.count >= 8 { r.replaceSubrange(4..<8, with: [0xF0, 0xFF, 0xFF, 0xFF]) }
        }
        return r
    }

    // MARK: - The clock

    /// Moves every running stream's due frames (call every ~10 ms while `needsTicks`).
    public func tick(now: UInt64) {
        for s in streams where s.isRunning {
            if s.direction == .output { playDue(s, now: now) } else { captureDue(s, now: now) }
        }
    }

    private func playDue(_ s: PCMStream, now: UInt64) {
        guard let params = s.parameters, let queues, let q = queues.queue(VirtioSound.txQueue) else { return }
        var due = s.dueFrames(now: now, rate: params.rate.hertz)
        var completed = false
        var toHost: [Int16] = []
        while due > 0, !s.pendingTx.isEmpty {
            let frameBytes = params.bytesPerFrame
            let left = (s.pendingTx[0].data.count - s.pendingTx[0].played) / frameBytes
            let n = min(due, left)
            let start = s.pendingTx[0].played
            toHost += s.converter!.toHost(s.pendingTx[0].data[start..<(start + n * frameBytes)])
            s.pendingTx[0].played += n * frameBytes
            s.framesSinceClock += n
            // Data again after a dry spell mid-stream: that was an underrun (the guest was
            // late). A stream that runs dry and then stops (the end of a file) was not.
            if s.starved && s.bytesMoved > 0 { s.underruns += 1 }
            s.starved = false
            s.bytesMoved += UInt64(n * frameBytes)
            due -= n
            if s.pendingTx[0].played == s.pendingTx[0].data.count {
                let done = s.pendingTx.removeFirst()
                complete(done.chain, in: q, rx: false, status: VirtioSound.Status.ok, stream: s)
                s.buffersCompleted += 1
                completed = true
            }
        }
        if !toHost.isEmpty { host?.play(toHost) }
        if due > 0 {
            // Nothing left to play: the guest is late (or done). The clock starts again
            // when data comes, instead of owing the time.
            s.starved = true
            s.restartClock(now: now)
        }
        if completed { queues.notify(VirtioSound.txQueue) }
    }

    private func captureDue(_ s: PCMStream, now: UInt64) {
        guard let params = s.parameters, let queues, let q = queues.queue(VirtioSound.rxQueue) else { return }
        let due = s.dueFrames(now: now, rate: HostPCM.rate)
        if due > 0 {
            var samples = host?.capture(frames: due) ?? []
            if samples.count < due * HostPCM.channels {
                samples += Array(repeating: 0, count: due * HostPCM.channels - samples.count)
            }
            s.framesSinceClock += due
            s.captured += s.converter!.toGuest(samples)
        }
        var completed = false
        while let chain = s.pendingRx.first {
            let room = Int(chain.writableLength) - VirtioSound.pcmStatusSize
            guard s.captured.count >= room else { break }
            s.pendingRx.removeFirst()
            let data = Array(s.captured[..<room])
            s.captured.removeFirst(room)
            complete(chain, in: q, rx: s.direction == .input, status: VirtioSound.Status.ok, stream: s, data: data)
            s.bytesMoved += UInt64(room)
            s.buffersCompleted += 1
            s.starved = false
            completed = true
        }
        // No buffer to put it in: the guest is late. Keep at most one buffer's worth.
        if s.captured.count > params.bufferBytes {
            if !s.starved { s.underruns += 1 }
            s.starved = true
            let excess = s.captured.count - params.bufferBytes
            s.captured.removeFirst(excess - excess % params.bytesPerFrame)
        }
        if completed { queues.notify(VirtioSound.rxQueue) }
    }
}
