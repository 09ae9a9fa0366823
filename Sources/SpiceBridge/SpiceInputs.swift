import CSpiceServer
import LinuxSystem

/// Lock-key LEDs in SPICE's bits (SPICE_KEYBOARD_MODIFIER_FLAGS_*).
public struct KeyboardLEDs: OptionSet, Sendable, Hashable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    public static let scrollLock = KeyboardLEDs(rawValue: 1)
    public static let numLock = KeyboardLEDs(rawValue: 2)
    public static let capsLock = KeyboardLEDs(rawValue: 4)

    /// From a Linux EV_LED bitmap (bit LED_NUML=0, LED_CAPSL=1, LED_SCROLLL=2), as
    /// the guest writes it to a virtio-input keyboard's event queue.
    public init(linuxLEDBits bits: UInt32) {
        var leds: KeyboardLEDs = []
        if bits & 1 != 0 { leds.insert(.numLock) }
        if bits & 2 != 0 { leds.insert(.capsLock) }
        if bits & 4 != 0 { leds.insert(.scrollLock) }
        self = leds
    }
}

/// Pointer buttons as the server hands them to the mouse and tablet
/// interfaces (its "local" mask, spice.md §5.2: middle and right swapped
/// from the wire, the rest shifted up).
public struct MouseButtons: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let left = MouseButtons(rawValue: 0x01)
    public static let right = MouseButtons(rawValue: 0x02)
    public static let middle = MouseButtons(rawValue: 0x04)
    public static let wheelUp = MouseButtons(rawValue: 0x10)
    public static let wheelDown = MouseButtons(rawValue: 0x20)
    public static let side = MouseButtons(rawValue: 0x40)
    public static let extra = MouseButtons(rawValue: 0x80)

    /// Linux BTN_* codes of the real buttons (wheel "buttons" excluded: they are REL_WHEEL).
    public static let linuxCodes: [(MouseButtons, UInt16)] = [
        (.left, 0x110), (.right, 0x111), (.middle, 0x112), (.side, 0x113), (.extra, 0x114),
    ]

    /// The EV_KEY events that take a device from `old` to `self`.
    public func linuxChanges(from old: MouseButtons) -> [(code: UInt16, pressed: Bool)] {
        Self.linuxCodes.compactMap { button, code in
            contains(button) == old.contains(button) ? nil : (code, contains(button))
        }
    }
}

/// Relative pointer events (server mouse mode).
public enum SpiceMouseEvent: Sendable, Equatable {
    /// `wheel`: -1 up, +1 down (Linux REL_WHEEL is the opposite sign).
    case motion(dx: Int32, dy: Int32, wheel: Int32, buttons: MouseButtons)
    case buttons(MouseButtons)
}

/// Absolute pointer events (client mouse mode), in primary-surface pixels.
public enum SpiceTabletEvent: Sendable, Equatable {
    case position(x: Int32, y: Int32, buttons: MouseButtons)
    case wheel(Int32, buttons: MouseButtons)
    case buttons(MouseButtons)
}

/// The keyboard, mouse and tablet interfaces (spice.md §5), each delivering to
/// a closure on the spice loop thread, where spice-server's inputs channel
/// runs. Create, configure and use it on that thread.
///
/// - Keyboard: set-1 scancode bytes become Linux key codes (PCScancodeDecoder).
///   Call `setLEDs` on every guest LED change. In 0.15.1 `get_leds` is what a
///   client is told at connect; after that the server compares each client
///   lock-state message with its own copy (set by `spice_server_kbd_leds`,
///   toggled by its own injections) and injects Caps/Num/Scroll Lock presses
///   where they differ (inputs-channel.cpp). Stale LEDs mean spurious toggles:
///   a client connecting with NumLock off against a guest with it on gets a
///   NumLock press+release (the inputs test sees exactly that).
/// - Mouse (relative): used in server mouse mode.
/// - Tablet (absolute): registering it makes client mouse mode available
///   (with the primary created with mouse_mode=1 and one display); the
///   client then picks client mode. While a vdagent is attached and agent
///   mouse is on, the server sends positions to the agent instead
///   (`SpiceServer.setAgentMouse(false)` keeps them here).
///
/// The keyboard and mouse cannot be removed from a server (spice.md §5.4,
/// §9.15): they stay registered until the server is destroyed, and the C
/// instances live as long (SpiceServer keeps this object).
public final class SpiceInputs {
    public var onKey: (PCScancodeDecoder.KeyEvent) -> Void = { _ in }
    public var onMouse: (SpiceMouseEvent) -> Void = { _ in }
    public var onTablet: (SpiceTabletEvent) -> Void = { _ in }

    private weak var server: SpiceServer?
    private var decoder = PCScancodeDecoder()
    private var leds: KeyboardLEDs = []
    private var keyboard: UnsafeMutablePointer<SpiceKbdInstance>!
    private var mouse: UnsafeMutablePointer<SpiceMouseInstance>!
    private var tablet: UnsafeMutablePointer<SpiceTabletInstance>!
    public private(set) var tabletEnabled = false
    /// The tablet's coordinate range, once the server has set it.
    public private(set) var logicalSize: (width: Int32, height: Int32)?
    /// Scancode bytes that named no key.
    public var unknownScancodes: Int { decoder.unknown }

    /// Registers keyboard and mouse (and the tablet when `tablet` is true) with
    /// `server`. Loop thread.
    public init(server: SpiceServer, tablet withTablet: Bool = true) {
        precondition(onSpiceLoopThread(), "SpiceInputs must be created on the spice loop thread")
        self.server = server
        let me = Unmanaged.passUnretained(self).toOpaque()
        var k = SpiceKbdInstance()
        k.base.sif = UnsafeRawPointer(Self.keyboardInterface).assumingMemoryBound(to: SpiceBaseInterface.self)
        keyboard = InstanceContext.allocate(SpiceKbdInstance.self, initial: k, context: me)
        var m = SpiceMouseInstance()
        m.base.sif = UnsafeRawPointer(Self.mouseInterface).assumingMemoryBound(to: SpiceBaseInterface.self)
        mouse = InstanceContext.allocate(SpiceMouseInstance.self, initial: m, context: me)
        var t = SpiceTabletInstance()
        t.base.sif = UnsafeRawPointer(Self.tabletInterface).assumingMemoryBound(to: SpiceBaseInterface.self)
        tablet = InstanceContext.allocate(SpiceTabletInstance.self, initial: t, context: me)
        spice_server_add_interface(server.server, &keyboard.pointee.base)
        spice_server_add_interface(server.server, &mouse.pointee.base)
        server.devices.append(self)
        setTablet(enabled: withTablet)
    }

    deinit {
        // Only after the server is gone (it holds us until spice_server_destroy).
        InstanceContext.deallocate(keyboard)
        InstanceContext.deallocate(mouse)
        InstanceContext.deallocate(tablet)
    }

    /// The guest's lock LEDs changed (virtio-input EV_LED): remember them for
    /// get_leds and tell the clients. Loop thread.
    public func setLEDs(_ new: KeyboardLEDs) {
        precondition(onSpiceLoopThread(), "SpiceInputs.setLEDs must run on the spice loop thread")
        guard new != leds else { return }
        leds = new
        if server != nil { spice_server_kbd_leds(keyboard, Int32(new.rawValue)) }
    }


    /// Adds or removes the tablet, as QEMU does when the guest's pointer
    /// switches between absolute and relative (spice.md §5.3). Loop thread.
    public func setTablet(enabled: Bool) {
        precondition(onSpiceLoopThread(), "SpiceInputs.setTablet must run on the spice loop thread")
        guard enabled != tabletEnabled, let server else { return }
        tabletEnabled = enabled
        if enabled {
            spice_server_add_interface(server.server, &tablet.pointee.base)
        } else {
            spice_server_remove_interface(&tablet.pointee.base)
            logicalSize = nil
        }
    }

    // MARK: - The C interfaces

    private static func owner<T>(_ p: UnsafeMutablePointer<T>?) -> SpiceInputs? {
        InstanceContext.owner(of: p, as: SpiceInputs.self)
    }

    nonisolated(unsafe) private static let keyboardInterface: UnsafeMutablePointer<SpiceKbdInterface> = {
        let p = UnsafeMutablePointer<SpiceKbdInterface>.allocate(capacity: 1)
        p.initialize(to: SpiceKbdInterface())
        p.pointee.base = baseInterface(SPICE_INTERFACE_KEYBOARD, "hostvmm keyboard",
                                       SPICE_INTERFACE_KEYBOARD_MAJOR, SPICE_INTERFACE_KEYBOARD_MINOR)
        p.pointee.push_scan_freg = { sin, byte in
            guard let me = owner(sin), let key = me.decoder.feed(byte) else { return }
            me.onKey(key)
        }
        p.pointee.get_leds = { sin in owner(sin)?.leds.rawValue ?? 0 }
        return p
    }()

    nonisolated(unsafe) private static let mouseInterface: UnsafeMutablePointer<SpiceMouseInterface> = {
        let p = UnsafeMutablePointer<SpiceMouseInterface>.allocate(capacity: 1)
        p.initialize(to: SpiceMouseInterface())
        p.pointee.base = baseInterface(SPICE_INTERFACE_MOUSE, "hostvmm mouse",
                                       SPICE_INTERFACE_MOUSE_MAJOR, SPICE_INTERFACE_MOUSE_MINOR)
        p.pointee.motion = { sin, dx, dy, dz, buttons in
            owner(sin)?.onMouse(.motion(dx: dx, dy: dy, wheel: dz, buttons: MouseButtons(rawValue: buttons)))
        }
        p.pointee.buttons = { sin, buttons in
            owner(sin)?.onMouse(.buttons(MouseButtons(rawValue: buttons)))
        }
        return p
    }()

    nonisolated(unsafe) private static let tabletInterface: UnsafeMutablePointer<SpiceTabletInterface> = {
        let p = UnsafeMutablePointer<SpiceTabletInterface>.allocate(capacity: 1)
        p.initialize(to: SpiceTabletInterface())
        p.pointee.base = baseInterface(SPICE_INTERFACE_TABLET, "hostvmm tablet",
                                       SPICE_INTERFACE_TABLET_MAJOR, SPICE_INTERFACE_TABLET_MINOR)
        p.pointee.set_logical_size = { sin, w, h in
            guard let me = owner(sin) else { return }
            // QEMU keeps at least 16 so that scaling never divides by (almost) nothing.
            let size = (max(w, 16), max(h, 16))
            me.logicalSize = size
        }
        p.pointee.position = { sin, x, y, buttons in
            owner(sin)?.onTablet(.position(x: x, y: y, buttons: MouseButtons(rawValue: buttons)))
        }
        p.pointee.wheel = { sin, dz, buttons in
            // A button press in client mode arrives here with dz 0 (spice-server's
            // inputs channel): that is a button change, not a wheel step.
            let b = MouseButtons(rawValue: buttons)
            owner(sin)?.onTablet(dz == 0 ? .buttons(b) : .wheel(dz, buttons: b))
        }
        p.pointee.buttons = { sin, buttons in
            owner(sin)?.onTablet(.buttons(MouseButtons(rawValue: buttons)))
        }
        return p
    }()
}
