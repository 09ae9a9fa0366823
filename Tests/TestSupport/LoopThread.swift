import Foundation
import LinuxSystem

/// An EventLoop running on its own thread (as hostvmm's VM loop), with ways to
/// run code on it and wait, bounded, for a result. Shared by every test target.
public final class LoopThread: @unchecked Sendable {
    public let loop: EventLoop
    private let done = DispatchSemaphore(value: 0)

    public init() throws {
        // hostvmm ignores SIGPIPE (VMRunner) and handles EPIPE; code under test here
        // writes to sockets whose peers close, so this process must ignore it too.
        signal(SIGPIPE, SIG_IGN)
        loop = try EventLoop()
        Thread.detachNewThread { [loop, done] in
            loop.run()
            done.signal()
        }
    }

    public func stop() {
        loop.stop()
        _ = done.wait(timeout: .now() + 5)
    }

    /// Runs `body` on the loop; it calls `finish` with a value (possibly later,
    /// from a callback). Returns the value, or nil after `timeout`.
    public func onLoop<T>(timeout: TimeInterval, _ body: @escaping (@escaping (T) -> Void) -> Void) -> T? {
        let box = ResultBox<T>()
        // The loop thread is the only one that touches what `body` captures.
        nonisolated(unsafe) let work = body
        loop.execute { work { value in box.set(value) } }
        return box.wait(timeout: timeout)
    }

    /// Runs `body` on the loop thread and returns its result (within 10 s, or the test process stops).
    @discardableResult
    public func sync<T>(_ body: @escaping () -> T) -> T {
        nonisolated(unsafe) let work = body
        let result: T? = onLoop(timeout: 10) { finish in finish(work()) }
        guard let result else { preconditionFailure("the event loop did not run the work within 10 s") }
        return result
    }
}

/// One value, set once from any thread, waited for with a bound.
public final class ResultBox<T>: @unchecked Sendable {
    private let condition = NSCondition()
    private var value: T?

    public init() {}

    public func set(_ v: T) {
        condition.withLock {
            if value == nil { value = v }
            condition.broadcast()
        }
    }

    public func wait(timeout: TimeInterval) -> T? {
        let deadline = Date().addingTimeInterval(timeout)
        return condition.withLock {
            while value == nil { if !condition.wait(until: deadline) { break } }
            return value
        }
    }
}
