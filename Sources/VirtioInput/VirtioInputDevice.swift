import VirtioCore

/// A virtio-input device (virtio spec §5.8): a keyboard, an absolute tablet
/// (SPICE's client mouse mode) or a relative mouse (server mouse mode).
///
/// - eventq (queue 0, device to driver): each guest buffer receives one
///   `virtio_input_event`. Events are queued (at most `maxPendingEvents`; the
///   oldest are dropped beyond that) and delivered whenever the guest has
///   buffers, a SYN_REPORT closing each batch; the guest's evdev holds a
///   partial batch until its SYN_REPORT arrives.
/// - statusq (queue 1, driver to device): LED changes (EV_LED) from the guest,
///   reported through `onStatus`.
///
/// Threading: call everything on the loop thread that runs the backend (the
/// SPICE server's inputs callbacks run there too).
public final class VirtioInputDevice: VirtioDeviceBackend {
    public enum Flavour: String, Sendable, CaseIterable { case keyboard, tablet, mouse }

    public static let eventQueue = 0
    public static let statusQueue = 1
    /// Bounds host memory if the guest stops taking events (no driver, or a stuck one).
    public static let maxPendingEvents = 4096
    /// Absolute axes run 0...32767, like QEMU's virtio-tablet and SPICE's mouse mode.
    public static let absMax: UInt32 = 32767

    public let flavour: Flavour
    public let config: VirtioInputConfig
    private var select: UInt8 = 0
    private var subsel: UInt8 = 0
    private var pending: [InputEvent] = []
    private weak var queues: VirtioQueueAccess?

    /// Events the guest sent on the statusq (LEDs).
    public var onStatus: (InputEvent) -> Void = { _ in }
    /// LED code -> on, as last reported by the guest.
    public private(set) var leds: [UInt16: Bool] = [:]
    public private(set) var deliveredEvents = 0
    public private(set) var droppedEvents = 0

    public init(flavour: Flavour, serial: String? = nil) {
        self.flavour = flavour
        switch flavour {
        case .keyboard:
            config = VirtioInputConfig(
                name: "hostvmm virtio keyboard", serial: serial ?? "hostvmm-keyboard", vendor: 0x1af4, product: 0x0001,
                eventCodes: [
                    LinuxInput.evKey: Array(LinuxInput.keyboardKeys),
                    LinuxInput.evLED: [LinuxInput.ledNumLock, LinuxInput.ledCapsLock, LinuxInput.ledScrollLock],
                    // The driver only asks whether EV_REP is there (size > 0); the kernel does autorepeat.
                    LinuxInput.evRep: [0],
                ])
        case .tablet:
            config = VirtioInputConfig(
                name: "hostvmm virtio tablet", serial: serial ?? "hostvmm-tablet", vendor: 0x1af4, product: 0x0003,
                eventCodes: [
                    LinuxInput.evKey: [LinuxInput.btnLeft, LinuxInput.btnRight, LinuxInput.btnMiddle],
                    LinuxInput.evRel: [LinuxInput.relHWheel, LinuxInput.relWheel],
                    LinuxInput.evAbs: [LinuxInput.absX, LinuxInput.absY],
                ],
                absInfo: [
                    LinuxInput.absX: .init(min: 0, max: Self.absMax),
                    LinuxInput.absY: .init(min: 0, max: Self.absMax),
                ])
        case .mouse:
            // Product 2, as QEMU's virtio-mouse.
            config = VirtioInputConfig(
                name: "hostvmm virtio mouse", serial: serial ?? "hostvmm-mouse", vendor: 0x1af4, product: 0x0002,
                eventCodes: [
                    LinuxInput.evKey: [LinuxInput.btnLeft, LinuxInput.btnRight, LinuxInput.btnMiddle],
                    LinuxInput.evRel: [LinuxInput.relX, LinuxInput.relY, LinuxInput.relHWheel, LinuxInput.relWheel],
                ])
        }
    }

    // MARK: - Input API

    /// Queues events (the caller ends each batch with SYN_REPORT) and delivers what the guest has room for.
    public func send(_ events: [InputEvent]) {
        pending += events
        if pending.count > Self.maxPendingEvents {
            let excess = pending.count - Self.maxPendingEvents
            pending.removeFirst(excess)
            droppedEvents += excess
        }
        deliver()
    }

    /// Presses a key (Linux key code, e.g. 30 for KEY_A). False if this device has no such key.
    @discardableResult
    public func press(linuxKeyCode code: UInt16) -> Bool { key(code, value: 1) }

    @discardableResult
    public func release(linuxKeyCode code: UInt16) -> Bool { key(code, value: 0) }

    private func key(_ code: UInt16, value: UInt32) -> Bool {
        guard config.eventCodes[LinuxInput.evKey]?.contains(code) == true else { return false }
        send([InputEvent(type: LinuxInput.evKey, code: code, value: value), .synReport])
        return true
    }

    /// Moves the tablet's pointer; coordinates are clamped to 0...32767.
    public func move(x: Int, y: Int) {
        guard flavour == .tablet else { return }
        let cx = UInt32(max(0, min(Int(Self.absMax), x)))
        let cy = UInt32(max(0, min(Int(Self.absMax), y)))
        send([InputEvent(type: LinuxInput.evAbs, code: LinuxInput.absX, value: cx),
              InputEvent(type: LinuxInput.evAbs, code: LinuxInput.absY, value: cy), .synReport])
    }

    /// Moves the mouse by (dx, dy) pixels, as the guest's pointer acceleration sees fit.
    /// False on a device without relative axes (the keyboard, the tablet).
    @discardableResult
    public func moveRelative(dx: Int32, dy: Int32) -> Bool {
        relative([(LinuxInput.relX, dx), (LinuxInput.relY, dy)])
    }

    /// A pointer button (BTN_LEFT, BTN_RIGHT, BTN_MIDDLE) of the tablet or the mouse
    /// (the keyboard's key table has no buttons, so it refuses them).
    @discardableResult
    public func button(_ code: UInt16, pressed: Bool) -> Bool {
        key(code, value: pressed ? 1 : 0)
    }

    /// Wheel clicks: positive is up/right, as Linux's REL_WHEEL/REL_HWHEEL. False on the keyboard.
    @discardableResult
    public func scroll(vertical: Int32 = 0, horizontal: Int32 = 0) -> Bool {
        relative([(LinuxInput.relWheel, vertical), (LinuxInput.relHWheel, horizontal)])
    }

    /// One batch of EV_REL events (zero values left out), if the device has every axis named.
    private func relative(_ axes: [(code: UInt16, value: Int32)]) -> Bool {
        guard let codes = config.eventCodes[LinuxInput.evRel], axes.allSatisfy({ codes.contains($0.code) }) else {
            return false
        }
        let events = axes.filter { $0.value != 0 }
            .map { InputEvent(type: LinuxInput.evRel, code: $0.code, value: UInt32(bitPattern: $0.value)) }
        if !events.isEmpty { send(events + [.synReport]) }
        return true
    }

    public var pendingEvents: Int { pending.count }

    // MARK: - Queues

    private func deliver() {
        guard let queues, let q = queues.queue(Self.eventQueue), queues.isEnabled(Self.eventQueue) else { return }
        var used = false
        var taken = 0
        while taken < pending.count, let chain = q.pop() {
            used = true
            do {
                let n = try chain.write(pending[taken].encoded, memory: q.memory)
                if n == InputEvent.size {
                    taken += 1
                    q.push(head: chain.head, length: UInt32(n))
                } else {
                    q.push(head: chain.head, length: 0)  // a buffer too small for an event: return it empty
                }
            } catch {
                q.push(head: chain.head, length: 0)
            }
        }
        pending.removeFirst(taken)
        deliveredEvents += taken
        if used || q.broken != nil { queues.notify(Self.eventQueue) }
    }

    private func drainStatus() {
        guard let queues, let q = queues.queue(Self.statusQueue) else { return }
        var used = false
        while let chain = q.pop() {
            used = true
            let bytes = (try? chain.read(memory: q.memory, limit: 64 * InputEvent.size)) ?? []
            if queues.isEnabled(Self.statusQueue) {
                var offset = 0
                while let event = InputEvent(decoding: bytes[offset...]) {
                    offset += InputEvent.size
                    if event.type == LinuxInput.evLED { leds[event.code] = event.value != 0 }
                    onStatus(event)
                }
            }
            q.push(head: chain.head, length: 0)
        }
        if used || q.broken != nil { queues.notify(Self.statusQueue) }
    }

    // MARK: - VirtioDeviceBackend

    public var deviceFeatures: UInt64 { 0 }
    public var queueCount: Int { 2 }
    public var configSize: Int { VirtioInputConfig.size }
    /// Events and LED reports are 8 bytes; a chain over 64 KiB is not an input driver's.
    public var maxChainBytes: UInt64 { 64 << 10 }

    public func attach(_ queues: VirtioQueueAccess) { self.queues = queues }

    public func readConfig(offset: Int, count: Int) -> [UInt8] {
        Array(config.bytes(select: select, subsel: subsel)[offset..<(offset + count)])
    }

    public func writeConfig(offset: Int, bytes: [UInt8]) {
        // Only select (0) and subsel (1) are writable; the rest is read-only.
        for (i, b) in bytes.enumerated() {
            switch offset + i {
            case 0: select = b
            case 1: subsel = b
            default: break
            }
        }
    }

    public func queueNotified(_ index: Int) {
        switch index {
        case Self.eventQueue: deliver()
        case Self.statusQueue: drainStatus()
        default: break
        }
    }

    public func reset() {
        select = 0
        subsel = 0
        pending = []
        leds = [:]
    }
}
