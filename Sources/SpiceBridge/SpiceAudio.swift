import CSpiceServer

/// SPICE's playback and record channels (spice.md §6): the guest's sound to
/// the client, the client's microphone to the guest. Samples are interleaved
/// S16 stereo at 48 kHz, the rate spice-server 0.15 prefers (Opus's); the
/// server never pulls, so the caller paces: it hands over sound as the
/// guest's stream plays it and asks for microphone frames at the guest's rate.
///
/// Playback goes out in the server's 480-frame (10 ms) buffers. With no
/// client (or no free buffer) `play` drops the sound, as the server would
/// have nobody to send it to; `stopPlayback` pads the last buffer with
/// silence. Record: the server returns nothing until a client's microphone
/// has filled half its ring and after the client leaves; the caller then
/// substitutes silence (VirtioSoundDevice does).
///
/// Create and use on the spice loop thread (the sound channels run there).
public final class SpiceAudio {
    public static let rate: UInt32 = 48000
    private weak var server: SpiceServer?
    private var playbackInstance: UnsafeMutablePointer<SpicePlaybackInstance>!
    private var recordInstance: UnsafeMutablePointer<SpiceRecordInstance>!
    /// The server's buffer being filled, and how many frames it already has.
    private var buffer: UnsafeMutablePointer<UInt32>?
    private var bufferFrames = 0
    private var bufferFilled = 0
    public private(set) var playing = false
    public private(set) var recording = false
    /// Record channels of connected clients (a client with a microphone).
    public private(set) var recordClients = 0
    public private(set) var playbackClients = 0

    // Counters for `hostvmm audio`.
    public private(set) var framesSent: UInt64 = 0
    public private(set) var framesDropped: UInt64 = 0
    public private(set) var framesRecorded: UInt64 = 0

    /// Registers the playback and record interfaces. `compression`: Opus for clients
    /// that ask for it (the default, as QEMU's playback-compression=on); off sends raw PCM.
    public init(server: SpiceServer, compression: Bool = true) {
        precondition(onSpiceLoopThread(), "SpiceAudio must be created on the spice loop thread")
        self.server = server
        let me = Unmanaged.passUnretained(self).toOpaque()
        var p = SpicePlaybackInstance()
        p.base.sif = UnsafeRawPointer(Self.playbackInterface).assumingMemoryBound(to: SpiceBaseInterface.self)
        playbackInstance = InstanceContext.allocate(SpicePlaybackInstance.self, initial: p, context: me)
        var r = SpiceRecordInstance()
        r.base.sif = UnsafeRawPointer(Self.recordInterface).assumingMemoryBound(to: SpiceBaseInterface.self)
        recordInstance = InstanceContext.allocate(SpiceRecordInstance.self, initial: r, context: me)
        spice_server_set_playback_compression(server.server, compression ? 1 : 0)
        spice_server_add_interface(server.server, &playbackInstance.pointee.base)
        spice_server_add_interface(server.server, &recordInstance.pointee.base)
        spice_server_set_playback_rate(playbackInstance, Self.rate)
        spice_server_set_record_rate(recordInstance, Self.rate)
        server.devices.append(self)
        server.onChannel.append { [weak self] event in
            guard let self else { return }
            // CONNECTED comes before the link names its channel type (0 then): count INITIALIZED.
            let delta = event.kind == .initialized ? 1 : event.kind == .disconnected ? -1 : 0
            switch event.channelType {
            case 5: self.playbackClients = max(0, self.playbackClients + delta)  // SPICE_CHANNEL_PLAYBACK
            case 6: self.recordClients = max(0, self.recordClients + delta)  // SPICE_CHANNEL_RECORD
            default: break
            }
        }
    }

    deinit {
        // Only after the server is gone: it keeps the instances until spice_server_destroy.
        InstanceContext.deallocate(playbackInstance)
        InstanceContext.deallocate(recordInstance)
    }

    // MARK: - Playback

    public func startPlayback() {
        guard !playing else { return }
        playing = true
        spice_server_playback_start(playbackInstance)
    }

    public func stopPlayback() {
        guard playing else { return }
        if let buffer {
            // The partial last buffer, padded with silence (as QEMU does on disable).
            (buffer + bufferFilled).initialize(repeating: 0, count: bufferFrames - bufferFilled)
            spice_server_playback_put_samples(playbackInstance, buffer)
            self.buffer = nil
        }
        playing = false
        spice_server_playback_stop(playbackInstance)
    }

    /// Sends interleaved stereo frames; what finds no server buffer is dropped.
    public func play(_ samples: [Int16]) {
        guard playing else { return }
        let frames = samples.count / 2
        var done = 0
        samples.withUnsafeBytes { raw in
            while done < frames {
                if buffer == nil {
                    var ptr: UnsafeMutablePointer<UInt32>?
                    var n: UInt32 = 0
                    spice_server_playback_get_buffer(playbackInstance, &ptr, &n)
                    guard let ptr, n > 0 else { break }
                    buffer = ptr
                    bufferFrames = Int(n)
                    bufferFilled = 0
                }
                let n = min(bufferFrames - bufferFilled, frames - done)
                // One uint32 is one stereo frame, host-endian, as the samples already are.
                UnsafeMutableRawPointer(buffer! + bufferFilled)
                    .copyMemory(from: raw.baseAddress! + done * 4, byteCount: n * 4)
                bufferFilled += n
                done += n
                if bufferFilled == bufferFrames {
                    spice_server_playback_put_samples(playbackInstance, buffer)
                    buffer = nil
                }
            }
        }
        framesSent += UInt64(done)
        framesDropped += UInt64(frames - done)
    }

    /// Volume (0...65535 per channel) and mute the server sends to clients.
    public func setPlaybackVolume(left: UInt16, right: UInt16, muted: Bool) {
        var volume = [left, right]
        spice_server_playback_set_volume(playbackInstance, 2, &volume)
        spice_server_playback_set_mute(playbackInstance, muted ? 1 : 0)
    }

    // MARK: - Record

    public func startRecord() {
        guard !recording else { return }
        recording = true
        spice_server_record_start(recordInstance)
    }

    public func stopRecord() {
        guard recording else { return }
        recording = false
        spice_server_record_stop(recordInstance)
    }

    /// Up to `frames` stereo frames of the client's microphone (none while no client sends).
    public func record(frames: Int) -> [Int16] {
        guard recording, frames > 0 else { return [] }
        var out = [Int16](repeating: 0, count: frames * 2)
        let got = out.withUnsafeMutableBytes { raw in
            spice_server_record_get_samples(recordInstance, raw.baseAddress!.assumingMemoryBound(to: UInt32.self),
                                            UInt32(frames))
        }
        framesRecorded += UInt64(got)
        return Array(out.prefix(Int(got) * 2))
    }

    // MARK: - The C interfaces (no callbacks: the VMM pushes and pulls)

    nonisolated(unsafe) private static let playbackInterface: UnsafeMutablePointer<SpicePlaybackInterface> = {
        let p = UnsafeMutablePointer<SpicePlaybackInterface>.allocate(capacity: 1)
        p.initialize(to: SpicePlaybackInterface(
            base: baseInterface(SPICE_INTERFACE_PLAYBACK, "hostvmm playback", SPICE_INTERFACE_PLAYBACK_MAJOR,
                                SPICE_INTERFACE_PLAYBACK_MINOR)))
        return p
    }()

    nonisolated(unsafe) private static let recordInterface: UnsafeMutablePointer<SpiceRecordInterface> = {
        let p = UnsafeMutablePointer<SpiceRecordInterface>.allocate(capacity: 1)
        p.initialize(to: SpiceRecordInterface(
            base: baseInterface(SPICE_INTERFACE_RECORD, "hostvmm record", SPICE_INTERFACE_RECORD_MAJOR,
                                SPICE_INTERFACE_RECORD_MINOR)))
        return p
    }()
}
