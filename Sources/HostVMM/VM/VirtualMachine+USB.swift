import AgentProtocol
import Foundation
import LinuxSystem
import SpiceBridge
import USBRedir

/// One SPICE usbredir channel as the VM sees it: the char device relaying to QEMU's
/// usb-redir, and what the pass-through observer learnt about the device on it.
final class USBRedirChannelState {
    let device: USBRedirCharDevice
    let controller: USBSetup.Controller
    /// The current client's stream guard (a fresh one per client connection).
    var streamGuard = USBRedirStreamGuard()
    /// The device the client announced (device_connect) and has not unplugged.
    var attached: USBRedirDevice?
    var attachments = 0
    var framingLost: String?

    init(device: USBRedirCharDevice, controller: USBSetup.Controller) {
        self.device = device
        self.controller = controller
    }
}

extension VirtualMachine {
    /// Registers the SPICE usbredir channels (after startSpice, before QEMU: QEMU's
    /// sockets appear when it starts; a client that comes earlier waits for them).
    func startUSBRedir() {
        guard let spice, config.usb.controllers else { return }
        for channel in 0..<config.usb.redirChannels {
            let device = spice.addUSBRedirChannel(qemuSocket: state.usbRedirSocket(channel), loop: loop)
            let entry = USBRedirChannelState(device: device, controller: USBSetup.controller(forChannel: channel))
            device.onClient = { [unowned self, unowned entry] connected in self.usbRedirClient(entry, connected) }
            device.inspectClientBytes = { [unowned self, unowned entry] bytes in
                self.inspected(entry, entry.streamGuard.fromDevice(bytes))
            }
            device.inspectQEMUBytes = { [unowned self, unowned entry] bytes in
                let (events, verdict) = entry.streamGuard.fromQEMU(bytes)
                self.observe(entry, events)
                return self.inspected(entry, verdict)
            }
            device.onCut = { [unowned self, unowned entry] why in
                entry.framingLost = why
                self.detached(entry, reason: "stream refused")
                self.emit(VMEvent(name: "usb-stream-refused", data: ["channel": .int(Int64(entry.device.channelID)),
                                                                     "reason": .string(why)]))
            }
            usbRedirChannels.append(entry)
        }
        if !usbRedirChannels.isEmpty {
            let where_ = usbRedirChannels.map { "\($0.device.channelID): \($0.controller.rawValue)" }.joined(separator: ", ")
            onLog("usb: \(usbRedirChannels.count) SPICE usbredir channels (\(where_))"
                + (config.usb.filter.map { "; filter \($0)" } ?? ""))
        }
    }

    private func usbRedirClient(_ entry: USBRedirChannelState, _ connected: Bool) {
        if connected {
            entry.streamGuard = USBRedirStreamGuard()
            entry.framingLost = nil
        } else {
            detached(entry, reason: "client left")
        }
        emit(VMEvent(name: connected ? "usb-client-connected" : "usb-client-disconnected",
                     data: ["channel": .int(Int64(entry.device.channelID))]))
    }

    private func inspected(_ entry: USBRedirChannelState, _ verdict: USBRedirStreamGuard.Verdict)
        -> USBRedirCharDevice.Inspection
    {
        switch verdict {
        case .forward(let bytes, let events):
            observe(entry, events)
            return .forward(bytes)
        case .refuse(let why):
            return .cut("the client's usbredir stream is malformed (\(why))")
        }
    }

    private func observe(_ entry: USBRedirChannelState, _ events: [USBRedirObserver.Event]) {
        for event in events {
            switch event {
            case .deviceConnected(let device):
                if entry.attached != nil { detached(entry, reason: "replaced") }
                entry.attached = device
                entry.attachments += 1
                var data = Self.json(device)
                data["channel"] = .int(Int64(entry.device.channelID))
                data["controller"] = .string(entry.controller.rawValue)
                data["source"] = "spice"
                onLog("usb: \(device.vidpid) (\(device.speed) speed) attached on SPICE channel \(entry.device.channelID), "
                    + "\(entry.controller.rawValue)")
                emit(VMEvent(name: "usb-attached", data: data))
            case .deviceDisconnected:
                detached(entry, reason: "unplugged")
            case .filterRejected:
                detached(entry, reason: "refused by QEMU")
                emit(VMEvent(name: "usb-rejected", data: [
                    "channel": .int(Int64(entry.device.channelID)),
                    "reason": "QEMU refused the device (the VM's USB filter, or a speed or capability the controller cannot take; see qemu.log)",
                ]))
            case .framingLost(let direction, let why):
                // Only events are lost (the guard decides what reaches QEMU).
                onLog("usb: SPICE channel \(entry.device.channelID): no more device events from the \(direction) stream (\(why))")
            case .hello:
                break
            }
        }
    }

    private func detached(_ entry: USBRedirChannelState, reason: String) {
        guard let device = entry.attached else { return }
        entry.attached = nil
        var data = Self.json(device)
        data["channel"] = .int(Int64(entry.device.channelID))
        data["controller"] = .string(entry.controller.rawValue)
        data["source"] = "spice"
        data["reason"] = .string(reason)
        onLog("usb: \(device.vidpid) detached from SPICE channel \(entry.device.channelID) (\(reason))")
        emit(VMEvent(name: "usb-detached", data: data))
    }

    static func json(_ device: USBRedirDevice) -> JSONObject {
        var data: JSONObject = [
            "vid-pid": .string(device.vidpid),
            "speed": .string(device.speed.description),
            "class": .int(Int64(device.deviceClass)),
        ]
        if let bcd = device.versionBCD { data["version-bcd"] = .int(Int64(bcd)) }
        return data
    }

    /// `query-usb`: the controllers, each SPICE channel (client, device) and the host devices.
    func usbStatusJSON() -> JSONValue {
        guard config.usb.controllers else { return .object(["enabled": false]) }
        let channels: [JSONValue] = usbRedirChannels.map { entry in
            var o: JSONObject = [
                "channel": .int(Int64(entry.device.channelID)),
                "controller": .string(entry.controller.rawValue),
                "client": .bool(entry.device.clientAttached),
                "connected-to-qemu": .bool(entry.device.connectedToQEMU),
                "attachments": .int(Int64(entry.attachments)),
            ]
            if let d = entry.attached { o["device"] = .object(Self.json(d)) }
            if let lost = entry.framingLost { o["stream-error"] = .string(lost) }
            return .object(o)
        }
        var o: JSONObject = [
            "enabled": true,
            "controllers": .array([.string(USBSetup.Controller.xhci.rawValue), .string(USBSetup.Controller.ehci.rawValue)]),
            "spice-channels": .array(channels),
            "host-devices": usbHostStatusJSON(),
        ]
        if let filter = config.usb.filter { o["filter"] = .string(filter.description) }
        return .object(o)
    }
}
