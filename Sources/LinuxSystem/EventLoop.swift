import CLinuxSupport
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Readiness a watch asks for or reports.
public struct IOEvents: OptionSet, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    // <sys/epoll.h> values; Glibc's module does not export the EPOLL_EVENTS enum.
    public static let read = IOEvents(rawValue: 0x001)
    public static let write = IOEvents(rawValue: 0x004)
    public static let error = IOEvents(rawValue: 0x008)
    public static let hangup = IOEvents(rawValue: 0x010)
}

public struct WatchHandle: Hashable, Sendable {
    fileprivate let id: UInt64
}

public struct TimerHandle: Hashable, Sendable {
    fileprivate let id: UInt64
}

/// One epoll loop per hostvmm process: it owns every socket, child and timer.
///
/// Threading: `run()` is called on one thread, the loop thread; watches, timers
/// and their callbacks live there, and registering them is only legal there
/// (checked). Other threads hand work over with `execute`, which is what the
/// SPICE server's worker thread and future device backends will use
/// (../shared/docs/spice.md §3). The shape mirrors SpiceCoreInterface: fd
/// watches with a read/write mask and one-shot millisecond timers.
public final class EventLoop: @unchecked Sendable {
    private struct Watch {
        var fd: Int32
        var events: IOEvents
        var handler: (IOEvents) -> Void
    }

    private struct Timer {
        var deadline: UInt64
        var handler: () -> Void
    }

    private let epollFD: Int32
    private let wakeFD: Int32
    private var watches: [UInt64: Watch] = [:]
    private var timers: [UInt64: Timer] = [:]
    private var nextID: UInt64 = 1
    private var stopRequested = false
    private var loopThread: pthread_t?
    private let pending = Mutex<[@Sendable () -> Void]>([])

    public init() throws(SystemError) {
        epollFD = epoll_create1(Int32(EPOLL_CLOEXEC))
        guard epollFD >= 0 else { throw SystemError("epoll_create1") }
        wakeFD = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK))
        guard wakeFD >= 0 else { throw SystemError("eventfd") }
        var ev = epoll_event(events: IOEvents.read.rawValue, data: epoll_data_t(u64: 0))
        guard epoll_ctl(epollFD, EPOLL_CTL_ADD, wakeFD, &ev) == 0 else { throw SystemError("epoll_ctl", "eventfd") }
    }

    deinit {
        close(epollFD)
        close(wakeFD)
    }

    /// Milliseconds on CLOCK_MONOTONIC.
    public static func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1000 + UInt64(ts.tv_nsec) / 1_000_000
    }

    public var inLoopThread: Bool {
        guard let loopThread else { return true }  // before run(): setup happens on the future loop thread
        return pthread_equal(loopThread, pthread_self()) != 0
    }

    private func assertInLoop(_ function: StaticString = #function) {
        precondition(inLoopThread, "EventLoop.\(function) called off the loop thread")
    }

    // MARK: - Watches

    @discardableResult
    public func watch(fd: Int32, events: IOEvents, _ handler: @escaping (IOEvents) -> Void) throws(SystemError)
        -> WatchHandle
    {
        assertInLoop()
        let id = nextID
        nextID += 1
        var ev = epoll_event(events: events.rawValue, data: epoll_data_t(u64: id))
        guard epoll_ctl(epollFD, EPOLL_CTL_ADD, fd, &ev) == 0 else { throw SystemError("epoll_ctl add", "fd \(fd)") }
        watches[id] = Watch(fd: fd, events: events, handler: handler)
        return WatchHandle(id: id)
    }

    public func update(_ handle: WatchHandle, events: IOEvents) {
        assertInLoop()
        guard var w = watches[handle.id], w.events != events else { return }
        w.events = events
        watches[handle.id] = w
        var ev = epoll_event(events: events.rawValue, data: epoll_data_t(u64: handle.id))
        _ = epoll_ctl(epollFD, EPOLL_CTL_MOD, w.fd, &ev)
    }

    /// Stops watching. Call before closing the fd.
    public func remove(_ handle: WatchHandle) {
        assertInLoop()
        guard let w = watches.removeValue(forKey: handle.id) else { return }
        _ = epoll_ctl(epollFD, EPOLL_CTL_DEL, w.fd, nil)
    }

    // MARK: - Timers

    /// A one-shot timer.
    @discardableResult
    public func schedule(afterMilliseconds ms: UInt64, _ handler: @escaping () -> Void) -> TimerHandle {
        assertInLoop()
        let id = nextID
        nextID += 1
        timers[id] = Timer(deadline: Self.now() + ms, handler: handler)
        return TimerHandle(id: id)
    }

    public func cancel(_ handle: TimerHandle?) {
        assertInLoop()
        if let handle { timers.removeValue(forKey: handle.id) }
    }

    // MARK: - Cross-thread work

    /// Runs `work` on the loop thread. Safe from any thread.
    public func execute(_ work: @escaping @Sendable () -> Void) {
        pending.withLock { $0.append(work) }
        var one: UInt64 = 1
        _ = write(wakeFD, &one, 8)
    }

    /// Makes `run()` return after the current iteration. Safe from any thread.
    public func stop() {
        execute { [unowned self] in self.stopRequested = true }
    }

    // MARK: - Running

    /// Runs until `stop()`. Must be called on the thread that registered the watches.
    public func run() {
        loopThread = pthread_self()
        var events = [epoll_event](repeating: epoll_event(), count: 64)
        while !stopRequested {
            let timeout = nextTimeout()
            let n = events.withUnsafeMutableBufferPointer { buf in
                epoll_wait(epollFD, buf.baseAddress, Int32(buf.count), timeout)
            }
            if n < 0 && errno != EINTR { fatalError("epoll_wait: \(SystemError("epoll_wait"))") }
            for i in 0..<max(0, Int(n)) {
                let id = events[i].data.u64
                if id == 0 {
                    drainPending()
                    continue
                }
                // A handler earlier in this batch may have removed this watch.
                guard let w = watches[id] else { continue }
                w.handler(IOEvents(rawValue: events[i].events))
            }
            fireDueTimers()
        }
        loopThread = nil
        stopRequested = false
    }

    private func nextTimeout() -> Int32 {
        guard let earliest = timers.values.map(\.deadline).min() else { return -1 }
        let now = Self.now()
        return earliest <= now ? 0 : Int32(clamping: earliest - now)
    }

    private func fireDueTimers() {
        let now = Self.now()
        let due = timers.filter { $0.value.deadline <= now }.sorted { $0.value.deadline < $1.value.deadline }
        for (id, timer) in due {
            // An earlier timer's handler may have cancelled this one.
            guard timers.removeValue(forKey: id) != nil else { continue }
            timer.handler()
        }
    }

    private func drainPending() {
        var counter: UInt64 = 0
        _ = read(wakeFD, &counter, 8)
        let work = pending.withLock { queue -> [@Sendable () -> Void] in
            let w = queue
            queue.removeAll()
            return w
        }
        for item in work { item() }
    }
}
