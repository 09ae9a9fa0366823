import VirtioCore

/// What the guest set with PCM_SET_PARAMS, checked against what we offer.
public struct PCMParameters: Equatable, Sendable {
    public var direction: VirtioSound.Direction
    public var format: PCMFormat
    public var rate: PCMRate
    public var channels: Int
    public var bufferBytes: Int
    public var periodBytes: Int

    public var bytesPerFrame: Int { format.bytesPerSample * channels }
    public var description: String { "\(format) \(rate.hertz) Hz \(channels) ch, period \(periodBytes) of \(bufferBytes) bytes" }
}

/// One PCM stream's state (virtio spec §5.14.6.6.1's state machine) and the
/// guest buffers it holds.
///
/// Timing: the device keeps real time, not the guest. A running stream has a
/// clock (started at START, restarted after an underrun); each `tick` moves
/// exactly as many frames as the clock says are due: an output stream hands
/// them to the host and returns each guest buffer once all of its frames have
/// been played, so the guest's ALSA position advances at the real rate (a
/// device that returned buffers at once would make `aplay` of a minute
/// finish in a blink); an input stream takes them from the host and returns
/// each buffer once it is full.
final class PCMStream {
    enum State: String {
        case idle = "idle"  // no parameters yet
        case parametersSet = "set"
        case prepared, running, stopped, released
    }

    /// A tx buffer: its frames (copied out of guest memory when taken) and how far the clock played it.
    struct PendingTx {
        var chain: DescriptorChain
        var data: [UInt8]
        var played = 0
    }

    let id: Int
    let direction: VirtioSound.Direction
    var state = State.idle
    var parameters: PCMParameters?
    var converter: StreamConverter?
    var pendingTx: [PendingTx] = []
    var pendingRx: [DescriptorChain] = []
    /// Captured guest-format bytes not yet in a buffer (input streams).
    var captured: [UInt8] = []
    var clockStart: UInt64 = 0
    /// Frames moved since `clockStart`: guest frames for output, host frames for input.
    var framesSinceClock = 0
    /// The stream ran dry (output) or had no buffer (input) and has not recovered: one underrun is counted once.
    var starved = false

    // Counters for `hostvmm audio`.
    var buffersCompleted = 0
    var bytesMoved: UInt64 = 0
    var underruns = 0
    var starts = 0

    init(id: Int, direction: VirtioSound.Direction) {
        self.id = id
        self.direction = direction
    }

    var isRunning: Bool { state == .running }

    /// Bytes the device holds for the guest: queued unplayed output, or captured input not yet delivered.
    var queuedBytes: Int {
        direction == .output ? pendingTx.reduce(0) { $0 + $1.data.count - $1.played } : captured.count
    }

    func restartClock(now: UInt64) {
        clockStart = now
        framesSinceClock = 0
    }

    /// Frames the clock says are due now. A stall of over half a second (the host
    /// was busy, the loop blocked) restarts the clock instead of bursting.
    func dueFrames(now: UInt64, rate: Int) -> Int {
        let elapsed = now &- clockStart
        let target = Int(elapsed) * rate / 1000
        let due = target - framesSinceClock
        if due > rate / 2 {
            restartClock(now: now)
            return 0
        }
        return max(0, due)
    }
}
