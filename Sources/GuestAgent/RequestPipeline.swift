import AgentProtocol
import LinuxSystem

/// Runs requests off the reading thread, so the agent keeps reading (and can be
/// resynchronised) while a slow command runs: qemu-ga's loop blocks instead.
///
/// Replies leave in request order. Every request belongs to an *epoch*; a flush
/// byte (0xFF) or the host going away starts a new one: queued requests of the
/// old epoch are dropped, and a reply still being computed for it is discarded
/// when it finishes, so a host that resynchronised never reads a stale reply.
/// If a worker is stuck in a command when the epoch changes, a new worker takes
/// over the new epoch; the old one exits after its command returns.
final class RequestPipeline: @unchecked Sendable {
    private let monitor = Monitor()
    private let dispatcher: Dispatcher
    // Guarded by `monitor`:
    private var epoch: UInt64 = 0
    private var queue: [(epoch: UInt64, input: QGAInputFramer.Output)] = []
    private var outputFD: Int32 = -1
    private var generation: UInt64 = 0
    private var busy = false

    init(dispatcher: Dispatcher) {
        self.dispatcher = dispatcher
        startWorker(generation: 0)
    }

    /// Replies now go to `fd` (a new connection, or the virtio port).
    func attach(fd: Int32) {
        monitor.withLock {
            outputFD = fd
            newEpochLocked()
        }
    }

    /// The host went away: nothing pending is for anyone.
    func hostGone() {
        monitor.withLock {
            outputFD = -1
            newEpochLocked()
        }
    }

    func submit(_ input: QGAInputFramer.Output) {
        monitor.withLock {
            if case .resynchronise = input { newEpochLocked() }
            // Fast path: nothing ahead of it, and it cannot block: answer here.
            if !busy && queue.isEmpty && dispatcher.runsInline(input) {
                if let reply = dispatcher.handle(input), outputFD >= 0 { write(reply) }
                return
            }
            queue.append((epoch, input))
            monitor.broadcast()
        }
    }

    /// Called with the lock held, so replies never interleave.
    private func write(_ reply: [UInt8]) {
        if !Syscall.writeAll(fd: outputFD, reply) { Log.info("reply dropped: the host is not reading") }
    }

    private func newEpochLocked() {
        epoch += 1
        queue.removeAll()
        if busy {
            generation += 1
            busy = false
            startWorker(generation: generation)
        }
    }

    private func startWorker(generation mine: UInt64) {
        Threads.detach { [self] in self.work(generation: mine) }
    }

    private func work(generation mine: UInt64) {
        while true {
            let item: (epoch: UInt64, input: QGAInputFramer.Output)? = monitor.withLock {
                while queue.isEmpty && generation == mine { monitor.wait() }
                guard generation == mine else { return nil }
                busy = true
                return queue.removeFirst()
            }
            guard let item else { return }  // replaced after a resync
            let reply = dispatcher.handle(item.input)
            let keepGoing: Bool = monitor.withLock {
                guard generation == mine else { return false }
                busy = false
                if let reply, item.epoch == epoch, outputFD >= 0 { write(reply) }
                return true
            }
            if !keepGoing { return }
        }
    }
}
