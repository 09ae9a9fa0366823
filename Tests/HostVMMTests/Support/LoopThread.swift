import LinuxSystem
import Foundation
@testable import HostVMM

/// An EventLoop running on its own thread, with a way to run code on it and
/// wait (bounded) for a result delivered by a callback.
final class LoopThread: @unchecked Sendable {
    let loop: EventLoop
    private let done = DispatchSemaphore(value: 0)

    init() throws {
        // hostvmm ignores SIGPIPE (VMRunner) and handles EPIPE; code under test here
        // writes to sockets whose peers close, so this process must ignore it too.
        signal(SIGPIPE, SIG_IGN)
        loop = try EventLoop()
        Thread.detachNewThread { [loop, done] in
            loop.run()
            done.signal()
        }
    }

    func stop() {
        loop.stop()
        _ = done.wait(timeout: .now() + 5)
    }

    /// Runs `body` on the loop; it calls `finish` with a value (possibly later,
    /// from a callback). Returns the value, or nil after `timeout`.
    func onLoop<T>(timeout: TimeInterval, _ body: @escaping (@escaping (T) -> Void) -> Void) -> T? {
        let box = ResultBox<T>()
        // The loop thread is the only one that touches what `body` captures.
        nonisolated(unsafe) let work = body
        loop.execute { work { value in box.set(value) } }
        return box.wait(timeout: timeout)
    }

    func sync(_ body: @escaping () -> Void) {
        let finished: Bool? = onLoop(timeout: 10) { finish in
            body()
            finish(true)
        }
        precondition(finished == true, "the event loop did not run the work within 10 s")
    }
}

final class ResultBox<T>: @unchecked Sendable {
    private let condition = NSCondition()
    private var value: T?

    func set(_ v: T) {
        condition.withLock {
            if value == nil { value = v }
            condition.broadcast()
        }
    }

    func wait(timeout: TimeInterval) -> T? {
        let deadline = Date().addingTimeInterval(timeout)
        return condition.withLock {
            while value == nil { if !condition.wait(until: deadline) { break } }
            return value
        }
    }
}
