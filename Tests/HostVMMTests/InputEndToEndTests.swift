import AgentProtocol
import Foundation
import Testing

/// The virtio keyboard and tablet (`hostvmm up --inputs`) against the real
/// peers: QEMU's vhost-user-input-pci frontend and the guest kernel's
/// virtio_input + evdev. One boot, phases in order; the hostile phase is last.
@Suite(.serialized) struct InputEndToEndTests {
    /// One Linux `struct input_event` as read from /dev/input/eventN on x86-64 (24 bytes).
    struct GuestEvent: Equatable, CustomStringConvertible {
        var type: UInt16, code: UInt16, value: Int32
        var description: String { "(\(type),\(code),\(value))" }
    }

    static func parseEvents(_ od: String) -> [GuestEvent] {
        let bytes = od.split(whereSeparator: { $0 == " " || $0 == "\n" }).compactMap { UInt8($0, radix: 16) }
        return stride(from: 0, to: bytes.count - 23, by: 24).map { o in
            func le(_ at: Int, _ n: Int) -> UInt32 { (0..<n).reduce(0) { $0 | UInt32(bytes[o + at + $1]) << (8 * $1) } }
            return GuestEvent(type: UInt16(le(16, 2)), code: UInt16(le(18, 2)), value: Int32(bitPattern: le(20, 4)))
        }
    }

    /// The eventN handler and inputN sysfs name of the device called `name`.
    static func findDevice(_ devices: String, _ name: String) -> (event: String, input: String)? {
        for block in devices.components(separatedBy: "\n\n") where block.contains("N: Name=\"\(name)\"") {
            let event = block.split(whereSeparator: { $0 == " " || $0 == "\n" }).first { $0.hasPrefix("event") }
            let sysfs = block.split(separator: "\n").first { $0.hasPrefix("S: Sysfs=") }
            guard let event, let sysfs, let input = sysfs.split(separator: "/").last else { return nil }
            return (String(event), String(input))
        }
        return nil
    }

    func inputs(_ vm: BootedVM) throws -> JSONValue {
        let r = try vm.cli(["input", vm.name])
        return try JSONParser.parse(r.output)
    }

    /// Waits (bounded) until `path` in the guest holds `bytes` bytes, then returns its events.
    func readGuestEvents(_ vm: BootedVM, _ path: String, count: Int) throws -> [GuestEvent] {
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            let size = try vm.guestRun("wc -c < \(path)").output.trimmingCharacters(in: .whitespacesAndNewlines)
            if Int(size) ?? 0 >= 24 * count { break }
        }
        return Self.parseEvents(try vm.guestRun("od -An -tx1 -v \(path)").output)
    }

    func waitForInputs(_ vm: BootedVM, _ check: (JSONValue) -> Bool) throws -> JSONValue {
        let deadline = Date().addingTimeInterval(20)
        var last = try inputs(vm)
        while !check(last) && Date() < deadline {
            Thread.sleep(forTimeInterval: 0.2)
            last = try inputs(vm)
        }
        return last
    }

    @Test func keyboardAndTabletReachGuestEvdev() throws {
        let vm = try BootedVM(name: "e2e-input", options: ["--inputs", "--no-spice"],
                              extraEnvironment: ["HOSTVMM_TEST_HOOKS": "1"])
        // 1. The guest found both devices, with the identities and capabilities from our config space.
        let devices = try vm.guestRun("cat /proc/bus/input/devices").output
        let keyboard = try #require(Self.findDevice(devices, "hostvmm virtio keyboard"), "\(devices)")
        let tablet = try #require(Self.findDevice(devices, "hostvmm virtio tablet"), "\(devices)")
        #expect(devices.contains("Bus=0006 Vendor=1af4 Product=0001"))
        #expect(devices.contains("U: Uniq=hostvmm-e2e-input-keyboard"))
        #expect(devices.contains("B: EV=120003"))  // keyboard: SYN, KEY, LED, REP
        #expect(devices.contains("B: ABS=3"))  // tablet: ABS_X, ABS_Y
        #expect(devices.contains("B: REL=140"))  // tablet: REL_HWHEEL, REL_WHEEL
        let status = try inputs(vm)
        #expect(status["devices"]?["keyboard"]?["connected"] == .bool(true))
        #expect(status["devices"]?["tablet"]?["connected"] == .bool(true))

        // 2. Input sent through the Swift API (control API `input-send`) arrives as evdev events.
        _ = try vm.guestRun("""
            dd if=/dev/input/\(keyboard.event) of=/tmp/kbd.bin bs=24 count=4 2>/dev/null &
            dd if=/dev/input/\(tablet.event) of=/tmp/tab.bin bs=24 count=9 2>/dev/null &
            sleep 0.5
            """)
        let sentAt = Date()
        for args in [["--key", "30"], ["--move", "1000,2000"], ["--button", "left"], ["--button", "left", "--release"],
                     ["--scroll=-1"]] {
            let r = try vm.cli(["input", vm.name] + args)
            #expect(r.status == 0, "\(args): \(r.output)")
        }
        let kbd = try readGuestEvents(vm, "/tmp/kbd.bin", count: 4)
        let tab = try readGuestEvents(vm, "/tmp/tab.bin", count: 9)
        print("inputs: all events read back in the guest \(String(format: "%.2f", Date().timeIntervalSince(sentAt))) s after the first send (guest-exec polling included)")
        let syn = GuestEvent(type: 0, code: 0, value: 0)
        #expect(kbd == [GuestEvent(type: 1, code: 30, value: 1), syn, GuestEvent(type: 1, code: 30, value: 0), syn])
        #expect(tab == [GuestEvent(type: 3, code: 0, value: 1000), GuestEvent(type: 3, code: 1, value: 2000), syn,
                        GuestEvent(type: 1, code: 0x110, value: 1), syn, GuestEvent(type: 1, code: 0x110, value: 0), syn,
                        GuestEvent(type: 2, code: 8, value: -1), syn])

        // 3. LED state from the guest (statusq): through the LED class device, and through
        // the console keyboard handler reacting to a NumLock key press.
        _ = try vm.guestRun("echo 1 > /sys/class/leds/\(keyboard.input)::capslock/brightness")
        var leds = try waitForInputs(vm) { $0["devices"]?["keyboard"]?["leds"]?["caps-lock"] == .bool(true) }
        #expect(leds["devices"]?["keyboard"]?["leds"]?["caps-lock"] == .bool(true), "\(JSONWriter.string(leds))")
        _ = try vm.cli(["input", vm.name, "--key", "69"])
        leds = try waitForInputs(vm) { $0["devices"]?["keyboard"]?["leds"]?["num-lock"] == .bool(true) }
        #expect(leds["devices"]?["keyboard"]?["leds"]?["num-lock"] == .bool(true), "\(JSONWriter.string(leds))")
        #expect(vm.waitForOccurrence("\"input-led\"", count: 2, timeout: 10))

        // 4. A hostile descriptor chain on the tablet's eventq (test hook: the next chain
        // loops) breaks the tablet only: the keyboard and the agent keep working.
        let corrupt = try JSONParser.parse(try vm.cli(["input", vm.name, "--debug-corrupt", "tablet"]).output)
        #expect(corrupt["corrupted"] == .bool(true))
        _ = try vm.cli(["input", vm.name, "--move", "5,5"])
        let after = try waitForInputs(vm) { $0["devices"]?["tablet"]?["broken"] != nil }
        let reason = after["devices"]?["tablet"]?["broken"]?.stringValue ?? ""
        #expect(reason.contains("loops"), "\(JSONWriter.string(after))")
        #expect(after["devices"]?["keyboard"]?["broken"] == nil)
        #expect(vm.events(named: "input-broken").count == 1)
        // The kernel's own LED updates show up on evdev too (EV_LED, from the NumLock above): skip them.
        _ = try vm.guestRun("dd if=/dev/input/\(keyboard.event) of=/tmp/kbd2.bin bs=24 count=16 2>/dev/null & sleep 0.5")
        _ = try vm.cli(["input", vm.name, "--key", "48", "--action", "press"])
        var kbd2: [GuestEvent] = []
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            var afterLED = false
            kbd2 = Self.parseEvents(try vm.guestRun("od -An -tx1 -v /tmp/kbd2.bin").output).filter { e in
                defer { afterLED = e.type == 0x11 }
                return e.type != 0x11 && !(afterLED && e == syn)
            }
            if kbd2.count >= 2 { break }
        }
        #expect(Array(kbd2.prefix(2)) == [GuestEvent(type: 1, code: 48, value: 1), syn], "\(kbd2)")
        let ping = try vm.cli(["ping", vm.name])
        #expect(ping.status == 0 && ping.output.contains("agent answered"), "\(ping.output)")
        let qemuLog = (try? String(contentsOfFile: "\(vm.stateDir)/qemu.log", encoding: .utf8)) ?? ""
        #expect(qemuLog.contains("vhost vring error in virtqueue 0"), "QEMU saw the error eventfd: \(qemuLog)")
    }
}
