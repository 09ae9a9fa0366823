import AgentProtocol
import Foundation
import LinuxSystem
import USBHost
import USBRedir

/// A host USB device handed to this VM: a usb-redir hot-plugged on the xHCI (QMP
/// chardev-add + device_add; QEMU listens on usbhostN.sock) fed by usbredirhost.
final class USBHostAttachment {
    let slot: Int
    let device: USBHostDevice
    let claim: HostClaim
    var redirection: USBHostRedirection?

    init(slot: Int, device: USBHostDevice, claim: HostClaim) {
        self.slot = slot
        self.device = device
        self.claim = claim
    }

    var qemuID: String { "usbhost\(slot)" }
}

extension VirtualMachine {
    /// `usb-attach`: {"device": "VID:PID" | "BUS-ADDR", "force": bool}.
    func usbHostAttach(_ args: JSONObject, completion: @escaping (Result<JSONValue, ControlError>) -> Void) {
        guard config.usb.controllers else { return completion(.failure(.generic("this VM has no USB controllers (--no-usb)"))) }
        guard let text = args["device"]?.stringValue, let selector = USBDeviceSelector(text) else {
            return completion(.failure(.generic("'device' must be VID:PID (hex, as lsusb prints it) or BUS-ADDR (decimal)")))
        }
        let force = args["force"]?.boolValue ?? false
        guard USBHostBus.present else {
            return completion(.failure(.generic("this host has no USB (no /sys/bus/usb, no /dev/bus/usb): no device \(selector) to attach")))
        }
        let devices: [USBHostDevice]
        do { devices = try USBHostBus.list() } catch { return completion(.failure(.generic("\(error)"))) }
        let matching = devices.filter { $0.matches(selector) }
        guard let device = matching.first else {
            return completion(.failure(.generic("no USB device \(selector) on this host ('hostvmm usb list' shows them)")))
        }
        guard matching.count == 1 else {
            return completion(.failure(.generic("\(matching.count) devices are \(selector): name one by BUS-ADDR ("
                + matching.map(\.busAddress).joined(separator: ", ") + ")")))
        }
        if let why = device.attachRefusal, !force { return completion(.failure(.generic(why))) }
        if let filter = config.usb.filter,
            !filter.allows(vendorID: device.vendorID, productID: device.productID, versionBCD: device.versionBCD,
                           classes: [device.deviceClass] + device.interfaces.map(\.cls))
        {
            return completion(.failure(.generic("the VM's USB filter (\(filter)) refuses \(device.vidpid)")))
        }
        guard usbHostAttachments.allSatisfy({ $0.device.busAddress != device.busAddress }) else {
            return completion(.failure(.generic("\(device.busAddress) is already attached to this VM")))
        }
        guard let qmp else { return completion(.failure(.generic("QMP is not connected yet"))) }
        let claim: HostClaim
        do {
            claim = try HostClaim.take(.usb, device.busAddress, what: "\(device.busAddress) (\(device.vidpid))", for: config.name)
        } catch { return completion(.failure(.generic(error.description))) }
        let slot = (0...).first { s in !usbHostAttachments.contains { $0.slot == s } }!
        let attachment = USBHostAttachment(slot: slot, device: device, claim: claim)
        usbHostAttachments.append(attachment)
        let socketPath = state.usbHostSocket(slot)
        unlink(socketPath)
        let backend: JSONObject = [
            "type": "socket",
            "data": .object([
                "addr": .object(["type": "unix", "data": .object(["path": .string(socketPath)])]),
                "server": true, "wait": false,
            ]),
        ]
        func fail(_ why: String) {
            self.usbHostRemove(attachment, reason: nil)
            completion(.failure(.generic(why)))
        }
        qmp.execute("chardev-add", arguments: ["id": .string(attachment.qemuID), "backend": .object(backend)]) { [self] r in
            if case .failure(let e) = r { return fail("QEMU chardev-add: \(e)") }
            qmp.execute("device_add", arguments: ["driver": "usb-redir", "chardev": .string(attachment.qemuID),
                                                  "id": .string(attachment.qemuID),
                                                  "bus": .string(USBSetup.bus(.xhci))]) { [self] r in
                if case .failure(let e) = r { return fail("QEMU device_add usb-redir: \(e)") }
                do {
                    let fd = try UnixSocket.connect(path: socketPath)
                    // usbredirhost's threads call back: hop to the loop, which owns the VM.
                    let loop = self.loop
                    let vm = LoopBound(value: self)
                    let owned = LoopBound(value: attachment)
                    attachment.redirection = try USBHostRedirection.start(
                        device: device, socket: fd,
                        onLog: { line in loop.execute { vm.value?.onLog("usb host \(device.busAddress): \(line)") } },
                        onEnded: { why in
                            loop.execute {
                                guard let a = owned.value else { return }
                                vm.value?.usbHostRemove(a, reason: why)
                            }
                        })
                } catch {
                    return fail("\(error)")
                }
                var data = Self.json(device)
                data["source"] = "host"
                data["controller"] = .string(USBSetup.Controller.xhci.rawValue)
                onLog("usb: host device \(device.busAddress) (\(device.vidpid)) attached on xhci")
                emit(VMEvent(name: "usb-attached", data: data))
                completion(.success(.object(data)))
            }
        }
    }

    /// `usb-detach`: {"device": "VID:PID" | "BUS-ADDR"} of an attached host device.
    func usbHostDetach(_ args: JSONObject) -> Result<JSONValue, ControlError> {
        guard let text = args["device"]?.stringValue, let selector = USBDeviceSelector(text) else {
            return .failure(.generic("'device' must be VID:PID (hex) or BUS-ADDR (decimal)"))
        }
        guard let attachment = usbHostAttachments.first(where: { $0.device.matches(selector) }) else {
            return .failure(.generic("no host device \(selector) is attached to this VM"))
        }
        if let redirection = attachment.redirection {
            redirection.stop()  // onEnded removes it
        } else {
            usbHostRemove(attachment, reason: "detached")
        }
        return .success(.object(["detaching": .string(attachment.device.busAddress)]))
    }

    /// Unplugs the usb-redir from QEMU, gives the claim back, says so once.
    func usbHostRemove(_ attachment: USBHostAttachment, reason: String?) {
        guard let index = usbHostAttachments.firstIndex(where: { $0 === attachment }) else { return }
        usbHostAttachments.remove(at: index)
        attachment.claim.release()
        qmp?.execute("device_del", arguments: ["id": .string(attachment.qemuID)]) { [weak self] _ in
            self?.qmp?.execute("chardev-remove", arguments: ["id": .string(attachment.qemuID)])
        }
        guard let reason else { return }
        var data = Self.json(attachment.device)
        data["source"] = "host"
        data["reason"] = .string(reason)
        onLog("usb: host device \(attachment.device.busAddress) detached (\(reason))")
        emit(VMEvent(name: "usb-detached", data: data))
    }

    /// The VM is gone: every host device back to the host, every claim released.
    func stopUSBHost() {
        for attachment in usbHostAttachments {
            attachment.redirection?.stopAndWait(milliseconds: 3000)
            attachment.claim.release()
        }
        usbHostAttachments = []
    }

    func usbHostStatusJSON() -> JSONValue {
        .array(usbHostAttachments.map { a in
            var o = Self.json(a.device)
            o["bus-address"] = .string(a.device.busAddress)
            o["controller"] = .string(USBSetup.Controller.xhci.rawValue)
            return .object(o)
        })
    }

    static func json(_ device: USBHostDevice) -> JSONObject {
        var o: JSONObject = [
            "vid-pid": .string(device.vidpid),
            "bus-address": .string(device.busAddress),
            "speed": .string(device.speed.description),
            "class": .int(Int64(device.deviceClass)),
        ]
        if let m = device.manufacturer { o["manufacturer"] = .string(m) }
        if let p = device.product { o["product"] = .string(p) }
        return o
    }
}

/// `hostvmm usb list`: the host's USB devices and which VM holds each.
public enum USBHostInventory {
    public struct Entry: Sendable {
        public var device: USBHostDevice
        public var heldBy: String?
    }

    /// Empty when the host has no USB; throws only when libusb fails.
    public static func list() throws(USBHostError) -> [Entry] {
        guard USBHostBus.present else { return [] }
        return try USBHostBus.list().map { Entry(device: $0, heldBy: HostClaim.holder(.usb, $0.busAddress)) }
    }
}
