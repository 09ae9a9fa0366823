import AgentProtocol
import ArgumentParser
import HostVMM
import USBHost

struct USBCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "usb",
        abstract: "USB: a VM's redirected devices; the host's devices and handing them to a VM.",
        discussion: """
            SPICE clients redirect their own devices through the VM's usbredir channels (up's \
            --usb-redir, --usb-filter). Host devices go to one VM at a time with 'usb attach'.
            """,
        subcommands: [USBShowCommand.self, USBListCommand.self, USBAttachCommand.self, USBDetachCommand.self],
        defaultSubcommand: USBShowCommand.self)
}

struct USBShowCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show",
        abstract: "Show a VM's USB: controllers, each SPICE usbredir channel (client, device), host devices attached.")
    @OptionGroup var vm: VMSelection

    func run() {
        printJSON(execute(connect(vm), "query-usb"))
    }
}

struct USBListCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "List the host's USB devices: BUS-ADDR, VID:PID, class, speed, strings, and which VM holds each.")
    @Flag(help: "JSON, one object per device.") var json = false

    func run() throws {
        let entries: [USBHostInventory.Entry]
        do { entries = try USBHostInventory.list() } catch { fail("\(error)") }
        if entries.isEmpty && !json {
            print(USBHostBus.present ? "no USB devices on this host"
                  : "no USB devices on this host (no /sys/bus/usb: this machine has no USB controller)")
            return
        }
        for e in entries {
            let d = e.device
            if json {
                var o: JSONObject = ["bus-address": .string(d.busAddress), "vid-pid": .string(d.vidpid),
                                     "class": .int(Int64(d.deviceClass)), "speed": .string(d.speed.description)]
                if let m = d.manufacturer { o["manufacturer"] = .string(m) }
                if let p = d.product { o["product"] = .string(p) }
                if let vm = e.heldBy { o["vm"] = .string(vm) }
                printJSON(.object(o))
            } else {
                let strings = [d.manufacturer, d.product].compactMap { $0 }.joined(separator: " ")
                let cls = d.isHub ? "hub" : "class \(String(d.deviceClass, radix: 16))"
                print("\(d.busAddress)\t\(d.vidpid)\t\(cls)\t\(d.speed)\t\(strings.isEmpty ? "-" : strings)\t"
                      + (e.heldBy.map { "held by \($0)" } ?? "free"))
            }
        }
    }
}

/// `[NAME] DEVICE`: the VM name is optional and comes first, as in the other commands.
private func vmAndDevice(_ words: [String]) throws -> (VMSelection, String) {
    guard (1...2).contains(words.count) else { throw ValidationError("give [VM] DEVICE (VID:PID or BUS-ADDR)") }
    let vm = try VMSelection.parse(words.count == 2 ? [words[0]] : [])
    guard USBDeviceSelector(words.last!) != nil else {
        throw ValidationError("'\(words.last!)' is neither VID:PID (hex, e.g. 0781:5567) nor BUS-ADDR (decimal, e.g. 1-4)")
    }
    return (vm, words.last!)
}

struct USBAttachCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "attach",
        abstract: "Hand a host USB device to a VM (until detached, unplugged or the VM stops).")
    @Argument(help: "[VM] DEVICE: the VM (default: default) and VID:PID or BUS-ADDR ('hostvmm usb list').")
    var words: [String]
    @Flag(help: "Attach even a hub or a boot keyboard/mouse (likely the host's own).") var force = false

    func validate() throws { _ = try vmAndDevice(words) }

    func run() throws {
        let (vm, device) = try vmAndDevice(words)
        printJSON(execute(connect(vm), "usb-attach", ["device": .string(device), "force": .bool(force)]))
    }
}

struct USBDetachCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "detach",
        abstract: "Give a host USB device back to the host.")
    @Argument(help: "[VM] DEVICE: the VM (default: default) and VID:PID or BUS-ADDR.")
    var words: [String]

    func validate() throws { _ = try vmAndDevice(words) }

    func run() throws {
        let (vm, device) = try vmAndDevice(words)
        printJSON(execute(connect(vm), "usb-detach", ["device": .string(device)]))
    }
}
