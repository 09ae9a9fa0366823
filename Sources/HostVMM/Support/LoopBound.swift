import LinuxSystem

/// A weak reference to a loop-owned object, carried by a closure that another
/// thread hands to `EventLoop.execute`: the object is touched only on its loop,
/// so passing the reference across is safe even though the object is not Sendable.
struct LoopBound<T: AnyObject>: @unchecked Sendable {
    weak var value: T?
}

extension EventLoop {
    /// `execute` for work that captures objects owned by this loop's thread (the VM on
    /// the VM's loop, the devices on the device thread) or values copied for the trip:
    /// the caller vouches that nothing it captures is touched on two threads at once.
    func hop(_ body: @escaping () -> Void) {
        nonisolated(unsafe) let work = body
        execute { work() }
    }
}
