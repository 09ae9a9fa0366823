import SpiceBridge
import VirtioInput

/// The SPICE inputs channel joined to the virtio keyboard, tablet and mouse
/// (issue #7): keys by Linux key code; in client mouse mode the client's
/// absolute pointer scaled to the tablet's 0...32767, in server mouse mode its
/// relative motion to the mouse; buttons and wheel to whichever sent them. The
/// guest's keyboard LEDs go back to the server (wrong LEDs make spice-server
/// inject lock-key presses, spice.md §5.1). The channel runs on the VM's loop
/// (spice-server's); coordinates and button changes are worked out there and
/// only the device calls go to the device thread, in order.
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
        // The VM outlives its channel; nothing here keeps it alive.
        let toDevices: (@escaping () -> Void) -> Void = { [unowned self] work in self.onDevices(work) }
        /// Sends `device` the button changes from `old` to `new`; most events change none.
        func sync(_ new: MouseButtons, _ old: inout MouseButtons, on device: VirtioInputDevice) {
            guard new != old else { return }
            let changes = new.linuxChanges(from: old)
            old = new
            toDevices { for change in changes { device.button(change.code, pressed: change.pressed) } }
        }
        channel.onKey = { key in
            toDevices {
                if key.pressed { keyboard.press(linuxKeyCode: key.code) } else { keyboard.release(linuxKeyCode: key.code) }
            }
        }
        channel.onTablet = { [unowned channel] event in
            switch event {
            case .position(let x, let y, let newButtons):
                // The size from the channel: spice-server may set it while SpiceInputs
                // registers the tablet, before this closure exists.
                let size = channel.logicalSize ?? (0, 0)
                let (tx, ty) = (Self.tabletCoordinate(x, extent: size.width), Self.tabletCoordinate(y, extent: size.height))
                toDevices { tablet.move(x: tx, y: ty) }
                sync(newButtons, &tabletButtons, on: tablet)
            case .wheel(let motion, let newButtons):
                // SPICE counts wheel steps down as positive; Linux's REL_WHEEL counts up.
                toDevices { tablet.scroll(vertical: -motion) }
                sync(newButtons, &tabletButtons, on: tablet)
            case .buttons(let newButtons):
                sync(newButtons, &tabletButtons, on: tablet)
            }
        }
        channel.onMouse = { event in
            switch event {
            case .motion(let dx, let dy, let wheel, let newButtons):
                toDevices {
                    mouse.moveRelative(dx: dx, dy: dy)
                    if wheel != 0 { mouse.scroll(vertical: -wheel) }  // SPICE: +1 is down; Linux: up
                }
                sync(newButtons, &mouseButtons, on: mouse)
            case .buttons(let newButtons):
                sync(newButtons, &mouseButtons, on: mouse)
            }
        }
        spiceInputs = channel
    }

    /// The guest's LEDs changed (the keyboard's status queue, read on the device thread): tell the server.
    func keyboardLEDsChanged(linuxLEDBits bits: UInt32) {
        spiceInputs?.setLEDs(KeyboardLEDs(linuxLEDBits: bits))
    }

    /// A client coordinate in 0..<extent as the tablet's 0...32767 (extent unknown: passed as is).
    static func tabletCoordinate(_ value: Int32, extent: Int32) -> Int {
        guard extent > 1 else { return Int(value) }
        return Int(value) * Int(VirtioInputDevice.absMax) / Int(extent - 1)
    }
}
