import AgentProtocol
import Foundation
import Testing

/// The virtio keyboard and tablet (`hostvmm up --inputs`) against the real
/// peers: QEMU's vhost-user-input-pci frontend and the guest kernel's
/// virtio_input + evdev. One boot, phases in order; the hostile phase is last.
@Suite(.serialized) struct InputEndToEndTests {
    func inputs(_ vm: BootedVM) throws -> JSONValue {
        let r = try vm.cli(["input", vm.name])
        return try JSONParser.parse(r.output)
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
        let keyboard = try #require(GuestEvdev.findDevice(devices, "hostvmm virtio keyboard"), "\(devices)")
        let tablet = try #require(GuestEvdev.findDevice(devices, "hostvmm virtio tablet"), "\(devices)")
        #expect(devices.contains("Bus=0006 Vendor=1af4 Product=0001"))
        #expect(devices.contains("U: Uniq=hostvmm-e2e-input-keyboard"))
        #expect(devices.contains("B: EV=120003"))  // keyboard: SYN, KEY, LED, REP
        #expect(devices.contains("B: ABS=3"))  // tablet: ABS_X, ABS_Y
        #expect(devices.contains("B: REL=140"))  // tablet: REL_HWHEEL, REL_WHEEL
        let status = try inputs(vm)
        #expect(status["devices"]?["keyboard"]?["connected"] == .bool(true))
        #expect(status["devices"]?["tablet"]?["connected"] == .bool(true))

        // 2. Input sent through the Swift API (control API `input-send`) arrives as evdev events.
        try vm.captureEvents(keyboard.event, into: "/tmp/kbd.bin", count: 4)
        try vm.captureEvents(tablet.event, into: "/tmp/tab.bin", count: 9)
        let sentAt = Date()
        for args in [["--key", "30"], ["--move", "1000,2000"], ["--button", "left"], ["--button", "left", "--release"],
                     ["--scroll=-1"]] {
            let r = try vm.cli(["input", vm.name] + args)
            #expect(r.status == 0, "\(args): \(r.output)")
        }
        let kbd = try vm.readEvents("/tmp/kbd.bin", count: 4)
        let tab = try vm.readEvents("/tmp/tab.bin", count: 9)
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
        try vm.captureEvents(keyboard.event, into: "/tmp/kbd2.bin", count: 16)
        _ = try vm.cli(["input", vm.name, "--key", "48", "--action", "press"])
        var kbd2: [GuestEvent] = []
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            var afterLED = false
            kbd2 = GuestEvdev.parse(try vm.guestRun("od -An -tx1 -v /tmp/kbd2.bin").output).filter { e in
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
