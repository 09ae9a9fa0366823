import CLinuxSupport
import CUSBHost
import LinuxSystem
#if canImport(Glibc)
import Glibc
#endif

/// One host USB device handed to a VM: libusbredirhost speaks usbredir for the
/// device over a socket connected to a QEMU `usb-redir` chardev.
///
/// Threads, as libusbredirhost wants them (its docs/multi-thread.md): a reader
/// thread polls the socket and calls `usbredirhost_read_guest_data` (and is the
/// only caller of open/close/set_device), an event thread runs
/// `libusb_handle_events` (transfers complete there, and their replies are
/// written from there through the flush callback, so the host's locks are on).
/// Writes block: QEMU being slow slows the device, nothing is dropped.
///
/// Hot-unplug: libusbredirhost notices only when a transfer fails, so libusb's
/// DEVICE_LEFT hotplug event (udev) also detaches at once. `onEnded` is called
/// once, on a background thread, with why the redirection ended.
public final class USBHostRedirection: @unchecked Sendable {
    public let device: USBHostDevice?
    private var context: OpaquePointer?
    private var host: OpaquePointer?
    private let socket: Int32
    private let wakeFD: Int32
    private let state = Monitor()
    private var stopRequested = false
    private var deviceLeft = false
    private var ended = false
    private var eventThreadDone = false
    private var hotplugHandle: libusb_hotplug_callback_handle = 0
    /// Lines from libusbredirhost (warnings and errors) and our own; any thread.
    public var onLog: @Sendable (String) -> Void = { _ in }
    public var onEnded: @Sendable (String) -> Void = { _ in }

    /// Opens `device` on the host and starts redirecting it over `socket` (connected to
    /// QEMU's usb-redir chardev; this object owns it from now on).
    public static func start(device: USBHostDevice, socket: Int32, onLog: @escaping @Sendable (String) -> Void,
                             onEnded: @escaping @Sendable (String) -> Void) throws(USBHostError) -> USBHostRedirection {
        let redirection = try USBHostRedirection(device: device, socket: socket, onLog: onLog, onEnded: onEnded)
        try redirection.open()
        return redirection
    }

    /// No device: libusbredirhost says hello and waits. What the tests can run
    /// without USB hardware (the glue, the threads, the protocol against QEMU).
    public static func startWithoutDevice(socket: Int32, onLog: @escaping @Sendable (String) -> Void,
                                          onEnded: @escaping @Sendable (String) -> Void) throws(USBHostError)
        -> USBHostRedirection
    {
        let redirection = try USBHostRedirection(device: nil, socket: socket, onLog: onLog, onEnded: onEnded)
        try redirection.open()
        return redirection
    }

    private init(device: USBHostDevice?, socket: Int32, onLog: @escaping @Sendable (String) -> Void,
                 onEnded: @escaping @Sendable (String) -> Void) throws(USBHostError) {
        self.device = device
        self.socket = socket
        self.onLog = onLog
        self.onEnded = onEnded
        wakeFD = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK))
        guard wakeFD >= 0 else {
            Glibc.close(socket)
            throw USBHostError("eventfd: \(String(cString: strerror(errno)))")
        }
        let r = libusb_init(&context)
        guard r == 0 else {
            Glibc.close(socket)
            Glibc.close(wakeFD)
            throw .libusb("libusb_init", r)
        }
    }

    deinit {
        if let context { libusb_exit(context) }
    }

    private var priv: UnsafeMutableRawPointer { Unmanaged.passUnretained(self).toOpaque() }

    private func open() throws(USBHostError) {
        var handle: OpaquePointer?
        if let device {
            handle = try Self.openHandle(context: context, device: device)
        }
        host = usbredirhost_open_full(
            context, handle,
            { priv, level, message in
                guard let priv, let message, level <= 2 else { return }  // errors and warnings
                USBHostRedirection.from(priv).onLog("usbredirhost: \(String(cString: message))")
            },
            { priv, data, count in USBHostRedirection.from(priv!).readCallback(data, count) },
            { priv, data, count in USBHostRedirection.from(priv!).writeCallback(data, count) },
            { priv in USBHostRedirection.from(priv!).flush() },
            { UnsafeMutableRawPointer(Monitor.allocateLock()) },
            { lock in Monitor.lock(lock) },
            { lock in Monitor.unlock(lock) },
            { lock in Monitor.freeLock(lock) },
            priv, "hostvmm", 1 /* usbredirparser_error */, 0)
        guard host != nil else {
            cleanUp()
            throw USBHostError(device == nil ? "usbredirhost could not start"
                               : "usbredirhost could not take \(device!.busAddress) (claiming its interfaces failed)")
        }
        flush()  // the hello, queued before `host` was known
        if let device {
            var h: libusb_hotplug_callback_handle = 0
            let r = libusb_hotplug_register_callback(
                context, Int32(LIBUSB_HOTPLUG_EVENT_DEVICE_LEFT.rawValue), 0, Int32(device.vendorID),
                Int32(device.productID), LIBUSB_HOTPLUG_MATCH_ANY,
                { _, dev, _, priv in
                    guard let dev, let priv else { return 0 }
                    USBHostRedirection.from(priv).deviceLeft(bus: Int(libusb_get_bus_number(dev)),
                                                             address: Int(libusb_get_device_address(dev)))
                    return 0
                }, priv, &h)
            if r == 0 { hotplugHandle = h }
        }
        Threads.detach { [self] in eventLoop() }
        Threads.detach { [self] in readerLoop() }
    }

    private static func from(_ priv: UnsafeMutableRawPointer) -> USBHostRedirection {
        Unmanaged<USBHostRedirection>.fromOpaque(priv).takeUnretainedValue()
    }

    static func openHandle(context: OpaquePointer?, device: USBHostDevice) throws(USBHostError) -> OpaquePointer {
        var list: UnsafeMutablePointer<OpaquePointer?>?
        let count = libusb_get_device_list(context, &list)
        guard count >= 0 else { throw .libusb("libusb_get_device_list", Int32(count)) }
        defer { libusb_free_device_list(list, 1) }
        for i in 0..<count {
            guard let dev = list?[i], Int(libusb_get_bus_number(dev)) == device.bus,
                Int(libusb_get_device_address(dev)) == device.address
            else { continue }
            var handle: OpaquePointer?
            let r = libusb_open(dev, &handle)
            guard r == 0, let handle else { throw .libusb("opening \(device.busAddress) (\(device.vidpid))", r) }
            return handle
        }
        throw USBHostError("no USB device \(device.busAddress) on this host (unplugged?)")
    }

    // MARK: - Callbacks (reader and event threads)

    private func readCallback(_ data: UnsafeMutablePointer<UInt8>?, _ count: Int32) -> Int32 {
        let n = recv(socket, data, Int(count), Int32(MSG_DONTWAIT))
        if n > 0 { return Int32(n) }
        if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) { return 0 }
        return -1  // QEMU closed the connection (0) or the socket failed
    }

    private func writeCallback(_ data: UnsafeMutablePointer<UInt8>?, _ count: Int32) -> Int32 {
        guard let data else { return -1 }
        var done = 0
        while done < Int(count) {
            let n = send(socket, data + done, Int(count) - done, Int32(MSG_NOSIGNAL))
            if n > 0 {
                done += n
            } else if n < 0 && errno == EINTR {
                continue
            } else {
                return done > 0 ? Int32(done) : -1
            }
        }
        return count
    }

    private func flush() {
        guard let host else { return }
        _ = usbredirhost_write_guest_data(host)
    }

    private func deviceLeft(bus: Int, address: Int) {
        guard let device, device.bus == bus, device.address == address else { return }
        state.withLock { deviceLeft = true }
        wake()
    }

    private func wake() {
        var one: UInt64 = 1
        _ = write(wakeFD, &one, 8)
    }

    private func eventLoop() {
        var tv = timeval(tv_sec: 0, tv_usec: 200_000)
        while !state.withLock({ stopRequested }) {
            _ = libusb_handle_events_timeout_completed(context, &tv, nil)
        }
        state.withLock {
            eventThreadDone = true
            state.broadcast()
        }
    }

    private func readerLoop() {
        var why = "stopped"
        loop: while true {
            var fds = [pollfd(fd: socket, events: Int16(POLLIN), revents: 0), pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0)]
            _ = poll(&fds, 2, -1)
            if fds[1].revents != 0 {
                var value: UInt64 = 0
                _ = read(wakeFD, &value, 8)
            }
            let (stop, left) = state.withLock { (stopRequested, deviceLeft) }
            if stop { break }
            if left {
                why = "the device was unplugged from the host"
                break
            }
            if fds[0].revents != 0, let host {
                switch usbredirhost_read_guest_data(host) {
                case 0, Int32(usbredirhost_read_parse_error):
                    continue
                case Int32(usbredirhost_read_device_rejected):
                    why = "the VM's USB filter refused the device"
                    break loop
                case Int32(usbredirhost_read_device_lost):
                    why = "the device was lost (a reset or reconfiguration failed)"
                    break loop
                default:
                    why = "QEMU closed the connection"
                    break loop
                }
            }
        }
        // The event thread stops first: usbredirhost_close handles the events of its own
        // cancellations, and no transfer callback may run on a host being freed.
        state.withLock { stopRequested = true }
        if let context { libusb_interrupt_event_handler(context) }
        state.withLock {
            while !eventThreadDone { state.wait(milliseconds: 500) }
        }
        if hotplugHandle != 0 { libusb_hotplug_deregister_callback(context, hotplugHandle) }
        // Releases the interfaces (the host's drivers come back) and tells QEMU the device
        // is gone, if the socket still takes it.
        if let host { usbredirhost_close(host) }
        host = nil
        cleanUp()
        let endedNow = state.withLock { () -> Bool in
            defer {
                ended = true
                state.broadcast()
            }
            return !ended
        }
        if endedNow { onEnded(why) }
    }

    private func cleanUp() {
        Glibc.close(socket)
        Glibc.close(wakeFD)
    }

    /// Detaches the device (given back to the host's drivers) and ends; returns at once.
    public func stop() {
        state.withLock { stopRequested = true }
        wake()
    }

    /// `stop()`, then waits (at most `milliseconds`) until the device is given back:
    /// for a VM that is going away, so the host's drivers get the device back before exit.
    public func stopAndWait(milliseconds: Int) {
        stop()
        state.withLock {
            var waited = 0
            while !ended && waited < milliseconds {
                state.wait(milliseconds: 100)
                waited += 100
            }
        }
    }
}

extension Monitor {
    /// Plain mutexes for libusbredirhost's lock callbacks.
    static func allocateLock() -> UnsafeMutablePointer<pthread_mutex_t> {
        let m = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
        pthread_mutex_init(m, nil)
        return m
    }

    static func lock(_ lock: UnsafeMutableRawPointer?) {
        guard let lock else { return }
        pthread_mutex_lock(lock.assumingMemoryBound(to: pthread_mutex_t.self))
    }

    static func unlock(_ lock: UnsafeMutableRawPointer?) {
        guard let lock else { return }
        pthread_mutex_unlock(lock.assumingMemoryBound(to: pthread_mutex_t.self))
    }

    static func freeLock(_ lock: UnsafeMutableRawPointer?) {
        guard let lock else { return }
        let m = lock.assumingMemoryBound(to: pthread_mutex_t.self)
        pthread_mutex_destroy(m)
        m.deallocate()
    }
}
