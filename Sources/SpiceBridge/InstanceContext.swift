/// C instance structs with a Swift context behind them (spice.md §11,
/// "context recovery"). libspice-server calls the display and input
/// callbacks with the instance pointer only, some of them on its worker
/// thread; a lookup table would need a lock on every call. Instead each
/// instance is allocated in one block followed by a pointer to its Swift
/// owner, so a callback finds the owner with one load (container_of).
enum InstanceContext {
    private static func offset<T>(_: T.Type) -> Int { (MemoryLayout<T>.size + 15) & ~15 }

    /// A zero-initialised `T` with `context` stored after it. The memory never
    /// moves; free it with `deallocate` once libspice no longer holds it.
    static func allocate<T>(_ type: T.Type, initial: T, context: UnsafeMutableRawPointer) -> UnsafeMutablePointer<T> {
        let raw = UnsafeMutableRawPointer.allocate(byteCount: offset(T.self) + MemoryLayout<UnsafeRawPointer>.size,
                                                   alignment: 16)
        raw.initializeMemory(as: UInt8.self, repeating: 0, count: offset(T.self))
        (raw + offset(T.self)).storeBytes(of: context, as: UnsafeMutableRawPointer.self)
        let p = raw.bindMemory(to: T.self, capacity: 1)
        p.initialize(to: initial)
        return p
    }

    static func context<T>(of instance: UnsafePointer<T>) -> UnsafeMutableRawPointer {
        UnsafeRawPointer(instance).load(fromByteOffset: offset(T.self), as: UnsafeMutableRawPointer.self)
    }

    /// The owner registered for `instance` (unretained: the owner outlives its registration).
    static func owner<T, Owner: AnyObject>(of instance: UnsafeMutablePointer<T>?, as _: Owner.Type) -> Owner? {
        guard let instance else { return nil }
        return Unmanaged<Owner>.fromOpaque(context(of: UnsafePointer(instance))).takeUnretainedValue()
    }

    static func deallocate<T>(_ instance: UnsafeMutablePointer<T>) {
        instance.deinitialize(count: 1)
        UnsafeMutableRawPointer(instance).deallocate()
    }
}

/// True when the caller may use the loop-only libspice calls (spice.md §3).
func onSpiceLoopThread() -> Bool { SpiceCore.loop?.inLoopThread ?? true }
