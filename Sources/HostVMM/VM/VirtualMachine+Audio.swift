import AgentProtocol
import Foundation
import LinuxSystem
import PulseAudio
import SpiceBridge
import VirtioCore
import VirtioSound

/// The VM's sound (issue #12): our virtio-snd device, served over vhost-user
/// (QEMU's `vhost-user-snd-pci` connects to `sound.sock`), and where its
/// streams go: SPICE's playback and record channels and/or the host's
/// PulseAudio. The device runs on the device thread (SoundDeviceHost there);
/// this object, SPICE's channels and the client's volume belong to the VM's
/// loop, which is also the SPICE server's; libpulse keeps its own thread
/// (PulseAudioConnection).
final class VMAudio {
    let device: VirtioSoundDevice
    let backend: VhostUserBackend
    let socketPath: String
    let spice: SpiceAudio?
    let pulse: PulseAudioConnection?
    /// The device thread's half.
    let deviceHost: SoundDeviceHost
    private let loop: EventLoop
    private var captureTimer: TimerHandle?
    /// The SPICE client's playback volume and mute (VD_AGENT_AUDIO_VOLUME_SYNC through
    /// our guest agent), applied to what the guest plays, as spice-vdagent applies it to
    /// the guest's mixer. spice-gtk sends GStreamer's cubic volume (0...65535 for
    /// 0...1.0), so the amplitude gain is its cube: 32768 is about -18 dB. Per channel.
    /// The client's record volume is reported but not applied: spice-gtk 0.42 reads it
    /// from its source element even when that has no volume property, and then sends an
    /// uninitialised value (0/0 measured here with autoaudiosrc), which would silence
    /// every microphone.
    var playbackVolume: (mute: Bool, volumes: [UInt16])? {
        didSet { playbackGain = playbackVolume.map { Self.gain(mute: $0.mute, volumes: $0.volumes) } ?? (1, 1) }
    }
    /// Derived from `playbackVolume`, kept so the 10 ms path does not recompute it.
    private(set) var playbackGain: (left: Float, right: Float) = (1, 1)
    var captureVolume: (mute: Bool, volumes: [UInt16])?

    static func gain(mute: Bool, volumes: [UInt16]) -> (left: Float, right: Float) {
        if mute { return (0, 0) }
        func cube(_ v: UInt16) -> Float { let x = Float(v) / 65535; return x * x * x }
        let left = volumes.first ?? 65535
        return (cube(left), cube(volumes.count > 1 ? volumes[1] : left))
    }

    /// Scales interleaved stereo samples (nothing to do at unity).
    static func apply(_ gain: (left: Float, right: Float), to samples: [Int16]) -> [Int16] {
        if gain == (1, 1) { return samples }
        var out = samples
        for i in out.indices {
            let g = i & 1 == 0 ? gain.left : gain.right
            out[i] = Int16(max(-32768, min(32767, (Float(out[i]) * g).rounded())))
        }
        return out
    }

    /// Period of the device's clock and of the microphone's refill: SPICE's 10 ms frame.
    static let tickMs: UInt64 = 10
    /// Stream started or stopped, with the event's data (read on the device thread).
    var onStream: (VirtioSound.Direction, Bool, JSONObject) -> Void = { _, _, _ in }

    init(device: VirtioSoundDevice, backend: VhostUserBackend, socketPath: String, deviceHost: SoundDeviceHost,
         spice: SpiceAudio?, pulse: PulseAudioConnection?, loop: EventLoop)
    {
        self.device = device
        self.backend = backend
        self.socketPath = socketPath
        self.deviceHost = deviceHost
        self.spice = spice
        self.pulse = pulse
        self.loop = loop
    }

    // MARK: - From the device thread

    func streamChanged(direction: VirtioSound.Direction, running: Bool, event: JSONObject) {
        switch direction {
        case .output:
            if running { spice?.startPlayback() } else { spice?.stopPlayback() }
            pulse?.setPlayback(running: running)
        case .input:
            if running { spice?.startRecord() } else { spice?.stopRecord() }
            pulse?.setRecord(running: running)
            if running { startCapture() } else { stopCapture() }
        }
        onStream(direction, running, event)
    }

    func play(_ samples: [Int16]) {
        let scaled = Self.apply(playbackGain, to: samples)
        spice?.play(scaled)
        pulse?.play(scaled)
    }

    // MARK: - The microphone

    /// Every 10 ms while the guest records: a SPICE client's microphone while one has its
    /// record channel open, else PulseAudio's, into the device thread's buffer.
    private func startCapture() {
        guard captureTimer == nil else { return }
        captureTimer = loop.schedule(afterMilliseconds: Self.tickMs) { [weak self] in
            guard let self, self.captureTimer != nil else { return }
            self.captureTimer = nil
            let frames = Int(HostPCM.rate) * Int(Self.tickMs) / 1000
            let samples: [Int16]
            if let spice = self.spice, spice.recordClients > 0 {
                samples = spice.record(frames: frames)
            } else {
                samples = self.pulse?.capture(frames: frames) ?? []
            }
            self.deviceHost.microphone.append(samples)
            self.startCapture()
        }
    }

    func stopCapture() {
        loop.cancel(captureTimer)
        captureTimer = nil
        deviceHost.microphone.clear()
    }
}

/// Samples the VM's loop captured, waiting for the device thread's clock to take them.
/// Bounded: past `maxSamples` the oldest go (a device that stopped taking them).
final class CaptureBuffer: @unchecked Sendable {
    static let maxSamples = Int(HostPCM.rate) * HostPCM.channels / 10  // 100 ms
    private let lock = Monitor()
    private var samples: [Int16] = []

    func append(_ more: [Int16]) {
        guard !more.isEmpty else { return }
        lock.withLock {
            samples += more
            if samples.count > Self.maxSamples { samples.removeFirst(samples.count - Self.maxSamples) }
        }
    }

    /// Up to `frames` stereo frames.
    func take(frames: Int) -> [Int16] {
        lock.withLock {
            let n = min(samples.count, frames * HostPCM.channels)
            defer { samples.removeFirst(n) }
            return Array(samples.prefix(n))
        }
    }

    func clear() { lock.withLock { samples.removeAll() } }
}

/// The virtio-snd device's host on the device thread: its 10 ms clock, and the
/// streams' starts, stops and sound handed to the VM's loop (VMAudio).
final class SoundDeviceHost: VirtioSoundHost {
    private unowned let device: VirtioSoundDevice
    private let deviceLoop: EventLoop
    private let vmLoop: EventLoop
    private var timer: TimerHandle?
    let microphone = CaptureBuffer()
    /// Set once, on the VM's loop, before the backend listens.
    weak var audio: VMAudio?

    init(device: VirtioSoundDevice, deviceLoop: EventLoop, vmLoop: EventLoop) {
        self.device = device
        self.deviceLoop = deviceLoop
        self.vmLoop = vmLoop
        device.host = self
        device.clock = { EventLoop.now() }
        device.onTicksNeeded = { [unowned self] needed in needed ? self.startClock() : self.stopClock() }
    }

    private func startClock() {
        guard timer == nil else { return }
        scheduleTick()
    }

    private func scheduleTick() {
        timer = deviceLoop.schedule(afterMilliseconds: VMAudio.tickMs) { [weak self] in
            guard let self, self.timer != nil else { return }
            self.device.tick(now: EventLoop.now())
            if self.device.needsTicks { self.scheduleTick() } else { self.timer = nil }
        }
    }

    func stopClock() {
        deviceLoop.cancel(timer)
        timer = nil
    }

    func streamChanged(direction: VirtioSound.Direction, running: Bool) {
        let stream = device.streamStatus[direction == .output ? VirtioSoundDevice.outputStream : VirtioSoundDevice.inputStream]
        var event: JSONObject = ["stream": .string(direction == .output ? "playback" : "capture"), "running": .bool(running)]
        if let p = stream.parameters {
            event["format"] = .string(p.format.description)
            event["rate"] = .int(Int64(p.rate.hertz))
            event["channels"] = .int(Int64(p.channels))
        }
        let audio = LoopBound(value: self.audio)
        vmLoop.hop { audio.value?.streamChanged(direction: direction, running: running, event: event) }
    }

    func play(_ samples: [Int16]) {
        let audio = LoopBound(value: self.audio)
        vmLoop.hop { audio.value?.play(samples) }
    }

    /// What the VM's loop has captured so far (the device fills the rest with silence).
    func capture(frames: Int) -> [Int16] { microphone.take(frames: frames) }
}

extension VirtualMachine {
    /// Listens on the sound socket; after startSpice, before QEMU starts (it connects at once).
    func startAudio() throws {
        let setup = config.audio
        let spiceAudio = setup.spice ? spice.map { SpiceAudio(server: $0) } : nil
        let pulse = startPulse(setup)
        let vmLoop = loop
        let deviceLoop = devices?.loop ?? loop
        let path = state.soundSocket
        let (device, backend, host) = try setUpOnDevices { [unowned self] in
            let device = VirtioSoundDevice()
            let backend = self.makeBackend(name: "sound", device: device, brokenEvent: "audio-broken")
            device.onLog = self.deviceLog
            return (device, backend, SoundDeviceHost(device: device, deviceLoop: deviceLoop, vmLoop: vmLoop))
        }
        let audio = VMAudio(device: device, backend: backend, socketPath: path, deviceHost: host, spice: spiceAudio,
                            pulse: pulse, loop: loop)
        audio.onStream = { [unowned self] _, _, data in self.emit(VMEvent(name: "audio-stream", data: data)) }
        self.audio = audio
        try setUpOnDevices {
            host.audio = audio  // a weak reference, only ever handed back to the VM's loop
            try backend.listen(path: path)
        }
        let outputs = [spiceAudio != nil ? "SPICE" : nil, pulse != nil ? "PulseAudio" : nil].compactMap { $0 }
        onLog("audio: virtio-snd; sound goes to \(outputs.isEmpty ? "nowhere (no SPICE, no PulseAudio)" : outputs.joined(separator: " and "))")
    }

    /// PulseAudio as `--audio` asks: `if-reachable` keeps it only when a server answers within 2 s.
    private func startPulse(_ setup: AudioSetup) -> PulseAudioConnection? {
        guard setup.pulse != .off else { return nil }
        let connection: PulseAudioConnection
        do {
            connection = try PulseAudioConnection(server: setup.pulseServer)
        } catch {
            onLog("audio: cannot start libpulse: \(error)")
            return nil
        }
        let state = connection.waitUntilSettled(milliseconds: 2000)
        if state != .ready && setup.pulse == .ifReachable {
            onLog("audio: no PulseAudio server (\(connection.failure ?? "no answer")); sound goes to SPICE only")
            return nil
        }
        if state != .ready {
            onLog("audio: PulseAudio was asked for but \(connection.failure.map { "is not there (\($0))" } ?? "did not answer within 2 s"); "
                  + "the VM runs on, and hostvmm tries again when the guest next starts a stream")
        } else {
            onLog("audio: PulseAudio server \(connection.serverName ?? "(default)")")
        }
        // libpulse's thread: hop to the VM's loop.
        let vm = LoopBound(value: self)
        let loop = self.loop
        connection.onLog = { line in
            loop.execute {
                vm.value?.onLog("audio: " + line)
                vm.value?.emit(VMEvent(name: "audio-backend", data: ["backend": "pulse", "message": .string(line)]))
            }
        }
        return connection
    }

    /// An `audio-volume` notice from our guest agent (data: stream, mute, volume[]); false if malformed.
    func audioVolumeChanged(_ data: JSONObject) -> Bool {
        guard let stream = data["stream"]?.stringValue, ["playback", "capture"].contains(stream),
            let mute = data["mute"]?.boolValue, let list = data["volume"]?.arrayValue,
            (1...VDAgentAudioVolume.maxChannels).contains(list.count)
        else { return false }
        let volumes = list.compactMap { $0.int64Value.flatMap(UInt16.init(exactly:)) }
        guard volumes.count == list.count else { return false }
        guard let audio else { return true }  // no sound card: nothing to apply, still worth the event
        if stream == "playback" {
            audio.playbackVolume = (mute, volumes)
        } else {
            audio.captureVolume = (mute, volumes)  // reported, not applied (see VMAudio)
        }
        onLog("audio: the SPICE client's \(stream) volume: \(mute ? "muted" : volumes.map(String.init).joined(separator: "/"))")
        return true
    }

    /// `audio-debug-corrupt` (HOSTVMM_TEST_HOOKS=1 only): {"requests": N} alters the next N
    /// control requests, {"transfers": N} the next N playback transfers (VirtioSoundDevice
    /// says how), {"chain": true} turns the next tx descriptor chain the guest offers into
    /// a loop, which breaks the device until the guest resets it.
    func audioDebugCorrupt(_ args: JSONObject, _ done: @escaping (Result<JSONValue, ControlError>) -> Void) {
        guard Self.testHooksEnabled else { return done(.failure(.commandNotFound("audio-debug-corrupt"))) }
        guard let audio else { return done(.failure(.generic("this VM has no sound device (it was started with --audio none)"))) }
        let device = audio.device, backend = audio.backend
        onDevices({ () -> JSONObject in
            if let n = args["requests"]?.int64Value { device.corruptNextRequests = Int(max(0, min(n, 1000))) }
            if let n = args["transfers"]?.int64Value { device.corruptNextTransfers = Int(max(0, min(n, 1000))) }
            var out: JSONObject = [
                "requests": .int(Int64(device.corruptNextRequests)),
                "transfers": .int(Int64(device.corruptNextTransfers)),
            ]
            if args["chain"]?.boolValue == true {
                backend._corruptChainAtNextKickForTesting(queue: VirtioSound.txQueue)
                out["chain"] = .bool(true)
            }
            return out
        }) { out in done(.success(.object(out))) }
    }

    /// `query-audio`: the device's figures read on the device thread, SPICE's and PulseAudio's here.
    func audioStatus(_ done: @escaping (JSONValue) -> Void) {
        guard let audio else { return done(.object(["enabled": .bool(false)])) }
        let device = audio.device, backend = audio.backend
        onDevices({ () -> JSONObject in
            var out: JSONObject = [
                "connected": .bool(backend.isConnected), "streams": .array(Self.streamsJSON(device.streamStatus)),
                "bad-requests": .int(Int64(device.badRequests)),
            ]
            if let e = device.lastError { out["last-error"] = .string(e) }
            if let reason = backend.brokenReason { out["broken"] = .string(reason) }
            return out
        }) { [weak audio] deviceFigures in
            guard let audio else { return done(.object(["enabled": .bool(false)])) }
            var out = Self.audioStatusJSON(audio)
            for member in deviceFigures.members { out[member.key] = member.value }
            done(.object(out))
        }
    }

    static func streamsJSON(_ status: [VirtioSoundDevice.StreamStatus]) -> [JSONValue] {
        var streams: [JSONValue] = []
        for s in status {
            var info: JSONObject = [
                "id": .int(Int64(s.id)), "direction": .string(s.direction == .output ? "playback" : "capture"),
                "state": .string(s.state), "queued-bytes": .int(Int64(s.queuedBytes)),
                "buffers": .int(Int64(s.buffersCompleted)), "bytes": .int(Int64(s.bytesMoved)),
                "underruns": .int(Int64(s.underruns)), "starts": .int(Int64(s.starts)),
            ]
            if let p = s.parameters {
                info["format"] = .string(p.format.description)
                info["rate"] = .int(Int64(p.rate.hertz))
                info["channels"] = .int(Int64(p.channels))
                info["buffer-bytes"] = .int(Int64(p.bufferBytes))
                info["period-bytes"] = .int(Int64(p.periodBytes))
            }
            streams.append(.object(info))
        }
        return streams
    }

    static func audioStatusJSON(_ audio: VMAudio) -> JSONObject {
        var sinks: JSONObject = [:]
        if let spice = audio.spice {
            sinks["spice"] = .object([
                "playing": .bool(spice.playing), "recording": .bool(spice.recording),
                "playback-clients": .int(Int64(spice.playbackClients)), "record-clients": .int(Int64(spice.recordClients)),
                "frames-sent": .int(Int64(spice.framesSent)), "frames-dropped": .int(Int64(spice.framesDropped)),
                "frames-recorded": .int(Int64(spice.framesRecorded)),
            ])
        }
        if let pulse = audio.pulse {
            var p: JSONObject = [
                "state": .string(pulse.state.rawValue),
                "frames-played": .int(Int64(pulse.framesPlayed)), "frames-dropped": .int(Int64(pulse.framesDropped)),
                "frames-captured": .int(Int64(pulse.framesCaptured)),
            ]
            if let server = pulse.serverName { p["server"] = .string(server) }
            if pulse.state != .ready, let failure = pulse.failure { p["failure"] = .string(failure) }
            sinks["pulse"] = .object(p)
        }
        var volume: JSONObject = [:]
        for (name, v) in [("playback", audio.playbackVolume), ("capture", audio.captureVolume)] {
            guard let v else { continue }
            volume[name] = .object(["mute": .bool(v.mute), "volume": .array(v.volumes.map { .int(Int64($0)) })])
        }
        return [
            "enabled": .bool(true), "client-volume": .object(volume),
            "sinks": .object(sinks), "host-format": "S16_LE 48000 Hz 2 ch",
        ]
    }
}
