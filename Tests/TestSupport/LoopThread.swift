import Foundation
import LinuxSystem

/// The tests' VM loop is LinuxSystem's LoopThread (hostvmm's device thread is one too);
/// these are the test-side ways to use it.
extension LoopThread {
    /// A loop thread for a test. hostvmm ignores SIGPIPE (VMRunner) and handles EPIPE;
    /// code under test here writes to sockets whose peers close, so this process must ignore it too.
    public convenience init() throws {
        signal(SIGPIPE, SIG_IGN)
        try self.init(name: "test-loop")
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
        guard let result = perform(timeoutMilliseconds: 10_000, body) else {
            preconditionFailure("the event loop did not run the work within 10 s")
        }
        return result
    }
}

extension ResultBox {
    /// `wait(milliseconds:)` in the tests' unit.
    public func wait(timeout: TimeInterval) -> T? { wait(milliseconds: Int(timeout * 1000)) }
}
