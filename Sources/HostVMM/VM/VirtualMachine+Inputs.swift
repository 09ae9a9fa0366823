import AgentProtocol
import Foundation
import LinuxSystem
import VirtioCore
import VirtioInput

/// One virtio-input device of the VM and the vhost-user backend serving it.
/// Both live on the device thread (VirtualMachine+Devices); the VM's loop holds
/// the reference and hands work over.
struct InputDevice {
    let device: VirtioInputDevice
    let backend: VhostUserBackend
    let socketPath: String
}

/// The virtio keyboard, tablet and mouse (issue #7; off with `--no-inputs`): hostvmm serves each
/// over vhost-user on a socket in the state directory; QEMU's
/// `vhost-user-input-pci` connects to it. Input comes from the control API
/// (`input-send`) and from SpiceBridge's inputs channel, both on the VM's loop,
/// which hands it to the device thread, where the backends run.
extension VirtualMachine {
    /// Test hooks (`input-debug-corrupt`) exist only when hostvmm runs with this set to 1.
    static let testHooksEnabled = ProcessInfo.processInfo.environment["HOSTVMM_TEST_HOOKS"] == "1"

    /// Listens on the devices' sockets; must run before QEMU starts (it connects at once).
    func startInputs() throws {
        let vmLoop = loop
        for flavour in VirtioInputDevice.Flavour.allCases {
            let name = flavour.rawValue
            let path = state.inputSocket(name)
            let serial = "hostvmm-\(config.name)-\(name)"
            inputs[name] = try setUpOnDevices { [unowned self] in
                let device = VirtioInputDevice(flavour: flavour, serial: serial)
                let backend = self.makeBackend(name: "input-\(name)", device: device, brokenEvent: "input-broken",
                                               brokenData: ["device": .string(name)])
                device.onStatus = { [unowned device] event in
                    guard event.type == LinuxInput.evLED else { return }
                    var bits: UInt32 = 0
                    for (code, on) in device.leds where on && code < 32 { bits |= 1 << UInt32(code) }
                    vmLoop.hop {
                        if name == "keyboard" { self.keyboardLEDsChanged(linuxLEDBits: bits) }
                        self.emit(VMEvent(name: "input-led", data: [
                            "device": .string(name), "led": .string(Self.ledName(event.code)), "on": .bool(event.value != 0),
                        ]))
                    }
                }
                try backend.listen(path: path)
                return InputDevice(device: device, backend: backend, socketPath: path)
            }
        }
    }

    static func ledName(_ code: UInt16) -> String {
        switch code {
        case LinuxInput.ledNumLock: return "num-lock"
        case LinuxInput.ledCapsLock: return "caps-lock"
        case LinuxInput.ledScrollLock: return "scroll-lock"
        default: return "led-\(code)"
        }
    }

    /// `query-inputs`: read on the device thread, answered on the VM's loop.
    func inputsStatus(_ done: @escaping (JSONValue) -> Void) {
        let inputs = self.inputs
        onDevices({ Self.inputsStatusJSON(inputs) }, then: done)
    }

    static func inputsStatusJSON(_ inputs: [String: InputDevice]) -> JSONValue {
        var out: JSONObject = [:]
        for (name, input) in inputs {
            var leds: JSONObject = [:]
            for (code, on) in input.device.leds { leds[Self.ledName(code)] = .bool(on) }
            var info: JSONObject = [
                "connected": .bool(input.backend.isConnected),
                "connections": .int(Int64(input.backend.connectionCount)),
                "delivered-events": .int(Int64(input.device.deliveredEvents)),
                "pending-events": .int(Int64(input.device.pendingEvents)),
                "dropped-events": .int(Int64(input.device.droppedEvents)),
                "leds": .object(leds),
            ]
            if let reason = input.backend.brokenReason { info["broken"] = .string(reason) }
            out[name] = .object(info)
        }
        return .object(["enabled": .bool(!inputs.isEmpty), "devices": .object(out)])
    }

    /// `input-send` (protocol.md §2): one action on one device, done on the device thread.
    func inputSend(_ args: JSONObject, _ done: @escaping (Result<JSONValue, ControlError>) -> Void) {
        guard let name = args["device"]?.stringValue, let input = inputs[name] else {
            return done(.failure(.generic(inputs.isEmpty ? "this VM has no input devices (it was started with --no-inputs)"
                                          : "'device' must be one of \(inputs.keys.sorted().joined(separator: ", "))")))
        }
        onDevices({ Self.inputSend(args, to: input.device, name: name) }, then: done)
    }

    static func inputSend(_ args: JSONObject, to d: VirtioInputDevice, name: String) -> Result<JSONValue, ControlError> {
        if let key = args["key"]?.int64Value {
            guard let code = UInt16(exactly: key) else { return .failure(.generic("'key' must be a Linux key code")) }
            let action = args["action"]?.stringValue ?? "tap"
            let ok: Bool
            switch action {
            case "press": ok = d.press(linuxKeyCode: code)
            case "release": ok = d.release(linuxKeyCode: code)
            case "tap": ok = d.press(linuxKeyCode: code) && d.release(linuxKeyCode: code)
            default: return .failure(.generic("'action' must be press, release or tap"))
            }
            guard ok else { return .failure(.generic("the \(name) has no key \(code)")) }
        } else if case .object(let pos)? = args["move"] {
            guard d.flavour == .tablet, let x = pos["x"]?.int64Value, let y = pos["y"]?.int64Value else {
                return .failure(.generic("'move' needs the tablet and integer 'x' and 'y' (0-32767)"))
            }
            d.move(x: Int(x), y: Int(y))
        } else if case .object(let delta)? = args["motion"] {
            guard let dx = delta["dx"]?.int64Value.flatMap(Int32.init(exactly:)),
                  let dy = delta["dy"]?.int64Value.flatMap(Int32.init(exactly:)), d.moveRelative(dx: dx, dy: dy)
            else {
                return .failure(.generic("'motion' needs the mouse and integer 'dx' and 'dy'"))
            }
        } else if let button = args["button"]?.stringValue {
            let codes = ["left": LinuxInput.btnLeft, "right": LinuxInput.btnRight, "middle": LinuxInput.btnMiddle]
            guard let code = codes[button], d.button(code, pressed: args["pressed"]?.boolValue ?? true) else {
                return .failure(.generic("'button' must be left, right or middle, on the tablet or the mouse"))
            }
        } else if let clicks = args["scroll"]?.int64Value, let v = Int32(exactly: clicks) {
            guard d.scroll(vertical: v) else { return .failure(.generic("'scroll' needs the tablet or the mouse")) }
        } else {
            return .failure(.generic("give one of 'key', 'move', 'motion', 'button' or 'scroll'"))
        }
        return .success(.object([
            "delivered-events": .int(Int64(d.deliveredEvents)), "pending-events": .int(Int64(d.pendingEvents)),
        ]))
    }

    /// `input-debug-corrupt` (HOSTVMM_TEST_HOOKS=1 only): rewrites the next
    /// descriptor chain of a device's eventq in guest memory into a loop, as a
    /// hostile driver would, so tests can watch the device break alone.
    func inputDebugCorrupt(_ args: JSONObject, _ done: @escaping (Result<JSONValue, ControlError>) -> Void) {
        guard Self.testHooksEnabled else { return done(.failure(.commandNotFound("input-debug-corrupt"))) }
        guard let name = args["device"]?.stringValue, let input = inputs[name] else {
            return done(.failure(.generic("unknown input device")))
        }
        onDevices({ input.backend._corruptNextChainForTesting(queue: VirtioInputDevice.eventQueue) }) { corrupted in
            done(.success(.object(["corrupted": .bool(corrupted)])))
        }
    }
}
