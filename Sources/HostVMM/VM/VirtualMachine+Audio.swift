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
/// PulseAudio. Everything runs on the VM's loop, which is also the SPICE
/// server's; libpulse keeps its own thread (PulseAudioConnection).
final class VMAudio: VirtioSoundHost {
    let device: VirtioSoundDevice
    let backend: VhostUserBackend
    let spice: SpiceAudio?
    let pulse: PulseAudioConnection?
    private let loop: EventLoop
    private var timer: TimerHandle?
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

    /// Period of the device's clock: SPICE's 10 ms frame.
    static let tickMs: UInt64 = 10
    var onStream: (VirtioSound.Direction, Bool) -> Void = { _, _ in }

    init(device: VirtioSoundDevice, backend: VhostUserBackend, spice: SpiceAudio?, pulse: PulseAudioConnection?,
         loop: EventLoop)
    {
        self.device = device
        self.backend = backend
        self.spice = spice
        self.pulse = pulse
        self.loop = loop
        device.host = self
        device.clock = { EventLoop.now() }
        device.onTicksNeeded = { [unowned self] needed in needed ? self.startClock() : self.stopClock() }
    }

    private func startClock() {
        guard timer == nil else { return }
        scheduleTick()
    }

    private func scheduleTick() {
        timer = loop.schedule(afterMilliseconds: Self.tickMs) { [weak self] in
            guard let self, self.timer != nil else { return }
            self.device.tick(now: EventLoop.now())
            if self.device.needsTicks { self.scheduleTick() } else { self.timer = nil }
        }
    }

    private func stopClock() {
        loop.cancel(timer)
        timer = nil
    }

    func close() {
        stopClock()
        backend.close()
    }

    // MARK: - VirtioSoundHost

    func streamChanged(direction: VirtioSound.Direction, running: Bool) {
        switch direction {
        case .output:
            if running { spice?.startPlayback() } else { spice?.stopPlayback() }
            pulse?.setPlayback(running: running)
        case .input:
            if running { spice?.startRecord() } else { spice?.stopRecord() }
            pulse?.setRecord(running: running)
        }
        onStream(direction, running)
    }

    func play(_ samples: [Int16]) {
        let scaled = Self.apply(playbackGain, to: samples)
        spice?.play(scaled)
        pulse?.play(scaled)
    }

    /// The microphone: a SPICE client's while one has its record channel open, else PulseAudio's.
    func capture(frames: Int) -> [Int16] {
        if let spice, spice.recordClients > 0 { return spice.record(frames: frames) }
        return pulse?.capture(frames: frames) ?? []
    }
}

extension VirtualMachine {
    /// Listens on the sound socket; after startSpice, before QEMU starts (it connects at once).
    func startAudio() throws {
        let setup = config.audio
        let device = VirtioSoundDevice()
        let backend = VhostUserBackend(name: "sound", device: device, loop: loop)
        backend.onLog = { [unowned self] line in self.onLog(line) }
        backend.onBroken = { [unowned self] reason in
            self.emit(VMEvent(name: "audio-broken", data: ["reason": .string(reason)]))
        }
        device.onLog = { [unowned self] line in self.onLog(line) }
        let spiceAudio = setup.spice ? spice.map { SpiceAudio(server: $0) } : nil
        let pulse = startPulse(setup)
        let audio = VMAudio(device: device, backend: backend, spice: spiceAudio, pulse: pulse, loop: loop)
        audio.onStream = { [unowned self, unowned device] direction, running in
            let stream = device.streamStatus[direction == .output ? VirtioSoundDevice.outputStream : VirtioSoundDevice.inputStream]
            var data: JSONObject = [
                "stream": .string(direction == .output ? "playback" : "capture"), "running": .bool(running),
            ]
            if let p = stream.parameters {
                data["format"] = .string(p.format.description)
                data["rate"] = .int(Int64(p.rate.hertz))
                data["channels"] = .int(Int64(p.channels))
            }
            self.emit(VMEvent(name: "audio-stream", data: data))
        }
        try backend.listen(path: state.soundSocket)
        self.audio = audio
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

    func stopAudio() {
        audio?.close()
        audio = nil
    }

    /// `audio-debug-corrupt` (HOSTVMM_TEST_HOOKS=1 only): {"requests": N} alters the next N
    /// control requests, {"transfers": N} the next N playback transfers (VirtioSoundDevice
    /// says how), {"chain": true} turns the next tx descriptor chain the guest offers into
    /// a loop, which breaks the device until the guest resets it.
    func audioDebugCorrupt(_ args: JSONObject) -> Result<JSONValue, ControlError> {
        guard Self.testHooksEnabled else { return .failure(.commandNotFound("audio-debug-corrupt")) }
        guard let audio else { return .failure(.generic("this VM has no sound device (it was started with --audio none)")) }
        if let n = args["requests"]?.int64Value { audio.device.corruptNextRequests = Int(max(0, min(n, 1000))) }
        if let n = args["transfers"]?.int64Value { audio.device.corruptNextTransfers = Int(max(0, min(n, 1000))) }
        var out: JSONObject = [
            "requests": .int(Int64(audio.device.corruptNextRequests)),
            "transfers": .int(Int64(audio.device.corruptNextTransfers)),
        ]
        if args["chain"]?.boolValue == true {
            audio.backend._corruptChainAtNextKickForTesting(queue: VirtioSound.txQueue)
            out["chain"] = .bool(true)
        }
        return .success(.object(out))
    }

    func audioStatusJSON() -> JSONValue {
        guard let audio else { return .object(["enabled": .bool(false)]) }
        var streams: [JSONValue] = []
        for s in audio.device.streamStatus {
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
        var out: JSONObject = [
            "enabled": .bool(true), "connected": .bool(audio.backend.isConnected), "streams": .array(streams),
            "client-volume": .object(volume),
            "sinks": .object(sinks), "host-format": "S16_LE 48000 Hz 2 ch",
            "bad-requests": .int(Int64(audio.device.badRequests)),
        ]
        if let e = audio.device.lastError { out["last-error"] = .string(e) }
        if let reason = audio.backend.brokenReason { out["broken"] = .string(reason) }
        return .object(out)
    }
}
