#if canImport(Glibc)
import Glibc
#endif

/// Detached POSIX threads and a mutex with a condition, for the guest agent,
/// which links neither Foundation nor Dispatch (a smaller static binary).
public enum Threads {
    private final class Body {
        let run: () -> Void
        init(_ run: @escaping () -> Void) { self.run = run }
    }

    /// Starts `body` on a new detached thread. Small stacks by default: the agent's
    /// threads run handlers and pipe readers, not recursion.
    public static func detach(stackBytes: Int = 1 << 20, _ body: @escaping @Sendable () -> Void) {
        let context = Unmanaged.passRetained(Body(body)).toOpaque()
        var thread = pthread_t()
        var attributes = pthread_attr_t()
        pthread_attr_init(&attributes)
        pthread_attr_setdetachstate(&attributes, Int32(PTHREAD_CREATE_DETACHED))
        pthread_attr_setstacksize(&attributes, stackBytes)
        let r = pthread_create(&thread, &attributes, { raw in
            let body = Unmanaged<Body>.fromOpaque(raw!).takeRetainedValue()
            body.run()
            return nil
        }, context)
        pthread_attr_destroy(&attributes)
        precondition(r == 0, "pthread_create failed: \(r)")
    }
}

/// A mutex with one condition variable. `withLock` holds the mutex; `wait`
/// (only inside `withLock`) releases it until `signal`/`broadcast` or a timeout.
public final class Monitor: @unchecked Sendable {
    private var mutex = pthread_mutex_t()
    private var condition = pthread_cond_t()

    public init() {
        pthread_mutex_init(&mutex, nil)
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        pthread_cond_init(&condition, &attributes)
        pthread_condattr_destroy(&attributes)
    }

    deinit {
        pthread_cond_destroy(&condition)
        pthread_mutex_destroy(&mutex)
    }

    /// For code that cannot use `withLock` (typed throws); pair with `unlock()`.
    public func lock() { pthread_mutex_lock(&mutex) }
    public func unlock() { pthread_mutex_unlock(&mutex) }

    public func withLock<T>(_ body: () throws -> T) rethrows -> T {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return try body()
    }

    /// Waits for a signal, at most `milliseconds` (nil: forever). Call inside `withLock`.
    public func wait(milliseconds: Int? = nil) {
        guard let milliseconds else {
            pthread_cond_wait(&condition, &mutex)
            return
        }
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        var deadline = now
        let nanos = Int(now.tv_nsec) + (milliseconds % 1000) * 1_000_000
        deadline.tv_sec += milliseconds / 1000 + nanos / 1_000_000_000
        deadline.tv_nsec = nanos % 1_000_000_000
        pthread_cond_timedwait(&condition, &mutex, &deadline)
    }

    public func broadcast() { pthread_cond_broadcast(&condition) }
}

/// One value, set once from any thread, waited for with a bound.
public final class ResultBox<T>: @unchecked Sendable {
    private let monitor = Monitor()
    private var value: T?

    public init() {}

    /// Sets the value (the first one wins) and wakes the waiters.
    public func set(_ v: T) {
        monitor.withLock {
            if value == nil { value = v }
            monitor.broadcast()
        }
    }

    /// The value, or nil if none was set within `milliseconds`.
    public func wait(milliseconds: Int) -> T? {
        let deadline = EventLoop.now() + UInt64(max(0, milliseconds))
        return monitor.withLock {
            while value == nil {
                let now = EventLoop.now()
                if now >= deadline { break }
                monitor.wait(milliseconds: Int(deadline - now))
            }
            return value
        }
    }
}
