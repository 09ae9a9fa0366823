import SpiceBridge
import VirtioInput

/// The SPICE inputs channel joined to the virtio keyboard, tablet and mouse
/// (issue #7): keys by Linux key code; in client mouse mode the client's
/// absolute pointer scaled to the tablet's 0...32767, in server mouse mode its
/// relative motion to the mouse; buttons and wheel to whichever sent them. The
/// guest's keyboard LEDs go back to the server (wrong LEDs make spice-server
/// inject lock-key presses, spice.md §5.1). Everything runs on the VM's event
/// loop, like both ends.
extension VirtualMachine {
    func connectSpiceInputs() {
        guard let spice, let keyboard = inputs["keyboard"]?.device, let tablet = inputs["tablet"]?.device,
              let mouse = inputs["mouse"]?.device
        else { return }
        let channel = SpiceInputs(server: spice, tablet: true)
        // Our guest agent injects no pointer events: with agent mouse on, the
        // client would send positions to the agent and the pointer would not move.
        spice.setAgentMouse(false)
        // Each pointer device has its own button state in the guest.
        var tabletButtons: MouseButtons = []
        var mouseButtons: MouseButtons = []
        /// Sends `device` the button changes from `old` to `new`; most events change none.
        func sync(_ new: MouseButtons, _ old: inout MouseButtons, on device: VirtioInputDevice) {
            guard new != old else { return }
            for change in new.linuxChanges(from: old) { device.button(change.code, pressed: change.pressed) }
            old = new
        }
        channel.onKey = { key in
            if key.pressed { keyboard.press(linuxKeyCode: key.code) } else { keyboard.release(linuxKeyCode: key.code) }
        }
        channel.onTablet = { [unowned channel] event in
            switch event {
            case .position(let x, let y, let newButtons):
                // The size from the channel: spice-server may set it while SpiceInputs
                // registers the tablet, before this closure exists.
                let size = channel.logicalSize ?? (0, 0)
                tablet.move(x: Self.tabletCoordinate(x, extent: size.width),
                            y: Self.tabletCoordinate(y, extent: size.height))
                sync(newButtons, &tabletButtons, on: tablet)
            case .wheel(let motion, let newButtons):
                // SPICE counts wheel steps down as positive; Linux's REL_WHEEL counts up.
                tablet.scroll(vertical: -motion)
                sync(newButtons, &tabletButtons, on: tablet)
            case .buttons(let newButtons):
                sync(newButtons, &tabletButtons, on: tablet)
            }
        }
        channel.onMouse = { event in
            switch event {
            case .motion(let dx, let dy, let wheel, let newButtons):
                mouse.moveRelative(dx: dx, dy: dy)
                if wheel != 0 { mouse.scroll(vertical: -wheel) }  // SPICE: +1 is down; Linux: up
                sync(newButtons, &mouseButtons, on: mouse)
            case .buttons(let newButtons):
                sync(newButtons, &mouseButtons, on: mouse)
            }
        }
        spiceInputs = channel
    }

    /// The guest's LEDs changed: tell the server (called from the keyboard's status queue).
    func keyboardLEDsChanged() {
        guard let channel = spiceInputs, let keyboard = inputs["keyboard"]?.device else { return }
        var bits: UInt32 = 0
        for (code, on) in keyboard.leds where on && code < 32 { bits |= 1 << UInt32(code) }
        channel.setLEDs(KeyboardLEDs(linuxLEDBits: bits))
    }

    /// A client coordinate in 0..<extent as the tablet's 0...32767 (extent unknown: passed as is).
    static func tabletCoordinate(_ value: Int32, extent: Int32) -> Int {
        guard extent > 1 else { return Int(value) }
        return Int(value) * Int(VirtioInputDevice.absMax) / Int(extent - 1)
    }
}
