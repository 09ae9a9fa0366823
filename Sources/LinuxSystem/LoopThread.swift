import CLinuxSupport
#if canImport(Glibc)
import Glibc
#endif

/// An EventLoop running on a thread of its own: hostvmm's device thread (the
/// vhost-user backends, which parse what the guest writes, apart from the VM's
/// loop so that they can run under a seccomp allow-list of their own), and the
/// VM loop of the tests.
///
/// Other threads hand it work with `loop.execute`, or wait for a result with
/// `perform`. To stay clear of deadlock, code on this loop never waits for a
/// thread that may `perform` on it: it hands results back with that thread's
/// own `execute`.
public final class LoopThread: @unchecked Sendable {
    public let loop: EventLoop
    private let finished = ResultBox<Bool>()

    /// Starts the thread and returns once its loop runs. `name` (at most 15 bytes
    /// are kept) is what `ps -L`, /proc/PID/task/TID/comm and `hostvmm status` show.
    public init(name: String, stackBytes: Int = 8 << 20) throws(SystemError) {
        loop = try EventLoop()
        let started = ResultBox<Bool>()
        Threads.detach(stackBytes: stackBytes) { [loop, finished] in
            _ = clinux_set_thread_name(name)
            // run() records its thread before it looks at the queue: from this work on,
            // `inLoopThread` is false everywhere else.
            loop.execute { started.set(true) }
            loop.run()
            finished.set(true)
        }
        guard started.wait(milliseconds: 10_000) != nil else { throw SystemError("loop thread", "did not start within 10 s", errno: ETIMEDOUT) }
    }

    /// Runs `body` on the loop thread and returns its result, or nil if it has not
    /// run within `timeoutMilliseconds` (it may still run later). On the loop
    /// thread itself, runs it at once.
    public func perform<T>(timeoutMilliseconds: Int = 10_000, _ body: @escaping () -> T) -> T? {
        if loop.inLoopThread { return body() }
        let box = ResultBox<T>()
        // Only the loop thread runs `body`, and the caller waits or gives up on it.
        nonisolated(unsafe) let work = body
        loop.execute { box.set(work()) }
        return box.wait(milliseconds: timeoutMilliseconds)
    }

    /// Stops the loop and waits (at most 5 s) for the thread to end.
    public func stop() {
        loop.stop()
        _ = finished.wait(milliseconds: 5000)
    }
}
