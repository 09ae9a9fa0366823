/// A weak reference to a loop-owned object, carried by a closure that another
/// thread hands to `EventLoop.execute`: the object is touched only on its loop,
/// so passing the reference across is safe even though the object is not Sendable.
struct LoopBound<T: AnyObject>: @unchecked Sendable {
    weak var value: T?
}
