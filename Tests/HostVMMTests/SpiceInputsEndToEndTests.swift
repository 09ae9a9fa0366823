import AgentProtocol
import Foundation
import Testing

/// SPICE's inputs channel joined to the virtio keyboard: a real spice-gtk
/// client's key presses arrive in the guest's evdev as Linux key events,
/// through hostvmm's SpiceInputs and our vhost-user virtio-input backend.
@Suite(.serialized, .timeLimit(.minutes(10))) struct SpiceInputsEndToEndTests {
    static let devicesClient = "\(TestEnvironment.packageRoot)/Tests/HostVMMTests/Clients/spice_devices.py"

    @Test func clientKeysArriveInTheGuestsEvdev() throws {
        let vm = try BootedVM(name: "e2e-spicekeys", options: ["--inputs"])
        let devices = try vm.guestRun("cat /proc/bus/input/devices").output
        let keyboard = try #require(InputEndToEndTests.findDevice(devices, "hostvmm virtio keyboard"), "\(devices)")
        // Four key events and their SYN_REPORTs; the reader runs in the guest's background.
        _ = try vm.guestRun("dd if=/dev/input/\(keyboard.event) of=/tmp/spicekeys.bin bs=24 count=8 2>/dev/null &")
        let uri = try vm.cli(["spice", vm.name]).output.trimmingCharacters(in: .whitespacesAndNewlines)
        let client = try WatchedProcess("/usr/bin/python3", [Self.devicesClient, uri, "keys"])
        defer { client.signal(SIGTERM); _ = client.waitForExit(timeout: 10) }
        #expect(client.waitForLine(containing: "keys-sent", timeout: 60) != nil, "\(client.transcript)")

        let events = try InputEndToEndTests().readGuestEvents(vm, "/tmp/spicekeys.bin", count: 8)
        let keys = events.filter { $0.type == 1 }.map { "\($0.code):\($0.value)" }
        // KEY_A = 30, KEY_Z = 44: press then release, in order.
        #expect(keys == ["30:1", "30:0", "44:1", "44:0"], "guest events: \(events)")
        _ = try vm.cli(["down", vm.name])
        #expect(vm.upExitCode() == 0)
    }
}
