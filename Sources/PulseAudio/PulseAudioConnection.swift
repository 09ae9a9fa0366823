import CPulse
import LinuxSystem

/// hostvmm's sound on the host's PulseAudio server (issue #12, `--audio pulse`):
/// one playback stream for what the guest plays, one record stream for what
/// it captures, opened while the guest's stream runs and closed when it stops.
///
/// libpulse runs its own thread (pa_threaded_mainloop): the VM's loop never
/// waits on the server. `play` queues samples under libpulse's lock (what the
/// server has no room for is dropped and counted, never waited for); the
/// record stream's callback fills a bounded buffer that `capture` drains.
/// A server that is missing or dies is reported once through `onLog`, the
/// streams are dropped, and each later stream start tries once more, so the
/// VM and SPICE's sound carry on regardless.
///
/// Samples: interleaved S16LE stereo at 48 kHz (HostPCM).
public final class PulseAudioConnection: @unchecked Sendable {
    public static let rate: UInt32 = 48000
    /// The most captured sound kept for the guest: 200 ms.
    static let captureLimitSamples = 48000 / 5 * 2

    public enum State: String, Sendable { case connecting, ready, failed }

    private let mainloop: OpaquePointer
    private var context: OpaquePointer?
    private var playback: OpaquePointer?
    private var record: OpaquePointer?
    private let server: String?
    private let monitor = Monitor()  // guards what both threads touch below
    private var _state = State.connecting
    private var _failure: String?
    private var captured: [Int16] = []
    private var wantPlayback = false
    private var wantRecord = false

    // Counters for `hostvmm audio` (loop thread, except framesCaptured under monitor).
    public private(set) var framesPlayed: UInt64 = 0
    public private(set) var framesDropped: UInt64 = 0
    private var _framesCaptured: UInt64 = 0

    /// Logged from libpulse's thread: the caller hops to its own loop if it needs to.
    public var onLog: @Sendable (String) -> Void = { _ in }

    /// Starts connecting to `server` (nil: libpulse's default, which honours PULSE_SERVER).
    public init(server: String? = nil) throws(SystemError) {
        guard let m = pa_threaded_mainloop_new() else { throw SystemError("pa_threaded_mainloop_new failed") }
        mainloop = m
        self.server = server
        guard pa_threaded_mainloop_start(m) >= 0 else {
            pa_threaded_mainloop_free(m)
            throw SystemError("cannot start libpulse's thread")
        }
        withPulseLock { connect() }
    }

    deinit {
        pa_threaded_mainloop_stop(mainloop)
        for s in [playback, record].compactMap({ $0 }) {
            pa_stream_disconnect(s)
            pa_stream_unref(s)
        }
        if let context {
            pa_context_disconnect(context)
            pa_context_unref(context)
        }
        pa_threaded_mainloop_free(mainloop)
    }

    public var state: State { monitor.withLock { _state } }
    /// Why the last connection failed or ended, in libpulse's words.
    public var failure: String? { monitor.withLock { _failure } }
    public var framesCaptured: UInt64 { monitor.withLock { _framesCaptured } }
    public var serverName: String? {
        withPulseLock {
            guard let context, pa_context_get_state(context) == PA_CONTEXT_READY else { return nil }
            return pa_context_get_server(context).map { String(cString: $0) }
        }
    }

    /// Waits (at most `milliseconds`) until the connection is ready or has failed.
    public func waitUntilSettled(milliseconds: Int) -> State {
        let deadline = EventLoop.now() + UInt64(milliseconds)
        return monitor.withLock {
            while _state == .connecting {
                let now = EventLoop.now()
                if now >= deadline { break }
                monitor.wait(milliseconds: Int(deadline - now))
            }
            return _state
        }
    }

    // MARK: - Streams (any thread but libpulse's)

    public func setPlayback(running: Bool) {
        withPulseLock {
            wantPlayback = running
            if running { reconnectIfFailed() }
            syncStreams()
        }
    }

    public func setRecord(running: Bool) {
        withPulseLock {
            wantRecord = running
            if running { reconnectIfFailed() }
            if !running { monitor.withLock { captured = [] } }
            syncStreams()
        }
    }

    /// Queues interleaved stereo frames for the server; what does not fit its buffer is dropped.
    public func play(_ samples: [Int16]) {
        let frames = samples.count / 2
        let written: Int = withPulseLock {
            guard let playback, pa_stream_get_state(playback) == PA_STREAM_READY else { return 0 }
            let room = pa_stream_writable_size(playback)
            guard room != Int.max else { return 0 }  // (size_t)-1: an error
            let bytes = min(room / 4, frames) * 4
            guard bytes > 0 else { return 0 }
            let ok = samples.withUnsafeBytes { pa_stream_write(playback, $0.baseAddress, bytes, nil, 0, PA_SEEK_RELATIVE) }
            return ok == 0 ? bytes / 4 : 0
        }
        framesPlayed += UInt64(written)
        framesDropped += UInt64(frames - written)
    }

    /// Up to `frames` captured stereo frames (fewer, or none, when the server has not delivered them).
    public func capture(frames: Int) -> [Int16] {
        monitor.withLock {
            let n = min(frames * 2, captured.count)
            defer { captured.removeFirst(n) }
            return Array(captured.prefix(n))
        }
    }

    // MARK: - libpulse (under its lock)

    private func withPulseLock<T>(_ body: () -> T) -> T {
        pa_threaded_mainloop_lock(mainloop)
        defer { pa_threaded_mainloop_unlock(mainloop) }
        return body()
    }

    private var me: UnsafeMutableRawPointer { Unmanaged.passUnretained(self).toOpaque() }

    private static func owner(_ p: UnsafeMutableRawPointer?) -> PulseAudioConnection {
        Unmanaged<PulseAudioConnection>.fromOpaque(p!).takeUnretainedValue()
    }

    private func connect() {
        guard let ctx = pa_context_new(pa_threaded_mainloop_get_api(mainloop), "hostvmm") else {
            setState(.failed, failure: "pa_context_new failed")
            return
        }
        context = ctx
        setState(.connecting, failure: nil)
        pa_context_set_state_callback(ctx, { ctx, userdata in
            PulseAudioConnection.owner(userdata).contextChanged(pa_context_get_state(ctx), error: pa_context_errno(ctx))
        }, me)
        // No autospawn: hostvmm never starts a sound server behind a person's back.
        if pa_context_connect(ctx, server, PA_CONTEXT_NOAUTOSPAWN, nil) < 0 {
            setState(.failed, failure: String(cString: pa_strerror(pa_context_errno(ctx))))
        }
    }

    /// A stream start after a failure tries again (at most every 5 s).
    private var lastAttempt: UInt64 = 0
    private func reconnectIfFailed() {
        guard state == .failed, EventLoop.now() - lastAttempt > 5000 else { return }
        lastAttempt = EventLoop.now()
        dropStreams()
        if let context {
            pa_context_set_state_callback(context, nil, nil)
            pa_context_disconnect(context)
            pa_context_unref(context)
            self.context = nil
        }
        connect()
    }

    private func setState(_ s: State, failure: String?) {
        monitor.withLock {
            _state = s
            if let failure { _failure = failure }
            monitor.broadcast()
        }
    }

    private func contextChanged(_ s: pa_context_state_t, error: Int32) {
        switch s {
        case PA_CONTEXT_READY:
            setState(.ready, failure: nil)
            onLog("pulse: connected to \(pa_context_get_server(context).map { String(cString: $0) } ?? "the server")")
            syncStreams()
        case PA_CONTEXT_FAILED, PA_CONTEXT_TERMINATED:
            let why = String(cString: pa_strerror(error))
            let was = state
            setState(.failed, failure: why)
            dropStreams()
            onLog(was == .ready ? "pulse: lost the PulseAudio server (\(why)); sound goes on through SPICE only"
                  : "pulse: no PulseAudio server (\(why)); sound goes through SPICE only")
        default:
            break
        }
    }

    private func dropStreams() {
        for s in [playback, record].compactMap({ $0 }) {
            pa_stream_set_read_callback(s, nil, nil)
            pa_stream_disconnect(s)
            pa_stream_unref(s)
        }
        playback = nil
        record = nil
    }

    /// Opens or closes the streams to match what the guest runs.
    private func syncStreams() {
        guard let context, pa_context_get_state(context) == PA_CONTEXT_READY else { return }
        var spec = pa_sample_spec(format: PA_SAMPLE_S16LE, rate: Self.rate, channels: 2)
        // 10 ms of audio is 1920 bytes; ask for ~40 ms of server-side buffering.
        let flags = pa_stream_flags_t(PA_STREAM_ADJUST_LATENCY.rawValue)
        if wantPlayback, playback == nil, let s = pa_stream_new(context, "guest playback", &spec, nil) {
            var attr = pa_buffer_attr(maxlength: UInt32.max, tlength: 7680, prebuf: UInt32.max, minreq: UInt32.max,
                                      fragsize: UInt32.max)
            pa_stream_connect_playback(s, nil, &attr, flags, nil, nil)
            playback = s
        } else if !wantPlayback, let s = playback {
            pa_stream_disconnect(s)
            pa_stream_unref(s)
            playback = nil
        }
        if wantRecord, record == nil, let s = pa_stream_new(context, "guest capture", &spec, nil) {
            var attr = pa_buffer_attr(maxlength: UInt32.max, tlength: UInt32.max, prebuf: UInt32.max,
                                      minreq: UInt32.max, fragsize: 1920)
            pa_stream_set_read_callback(s, { s, _, userdata in PulseAudioConnection.owner(userdata).readCaptured(s) }, me)
            pa_stream_connect_record(s, nil, &attr, flags)
            record = s
        } else if !wantRecord, let s = record {
            pa_stream_set_read_callback(s, nil, nil)
            pa_stream_disconnect(s)
            pa_stream_unref(s)
            record = nil
        }
    }

    /// libpulse's thread: move what the server captured into our bounded buffer.
    private func readCaptured(_ s: OpaquePointer?) {
        var data: UnsafeRawPointer?
        var bytes = 0
        while pa_stream_readable_size(s) > 0, pa_stream_peek(s, &data, &bytes) == 0, bytes > 0 {
            let samples: [Int16]
            if let data {
                samples = Array(UnsafeBufferPointer(start: data.assumingMemoryBound(to: Int16.self), count: bytes / 2))
            } else {
                samples = Array(repeating: 0, count: bytes / 2)  // a hole: silence
            }
            pa_stream_drop(s)
            monitor.withLock {
                captured += samples
                _framesCaptured += UInt64(samples.count / 2)
                if captured.count > Self.captureLimitSamples { captured.removeFirst(captured.count - Self.captureLimitSamples) }
            }
        }
    }
}
