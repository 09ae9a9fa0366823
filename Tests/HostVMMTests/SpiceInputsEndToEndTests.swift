import AgentProtocol
import Foundation
import Testing

/// SPICE's inputs channel joined to the virtio keyboard and tablet: a real
/// spice-gtk client's key presses, pointer moves and clicks arrive in the
/// guest's evdev as Linux input events, through hostvmm's SpiceInputs and our
/// vhost-user virtio-input backends.
@Suite(.serialized, .timeLimit(.minutes(30))) struct SpiceInputsEndToEndTests {
    @Test func clientKeysArriveInTheGuestsEvdev() throws {
        // --display too: spice-server offers client mouse mode (absolute positions) only
        // with a primary surface.
        let vm = try BootedVM(name: "e2e-spicekeys", options: ["--inputs", "--display"])
        let devices = try vm.guestRun("cat /proc/bus/input/devices").output
        // Four key events and their SYN_REPORTs.
        let keys = try vm.eventsAfterSpiceClient(devices, "hostvmm virtio keyboard", count: 8, afterClient: ["keys"], says: "keys-sent")
            .filter { $0.hasPrefix("1:") }
        // KEY_A = 30, KEY_Z = 44: press then release, in order.
        #expect(keys == ["1:30:1", "1:30:0", "1:44:1", "1:44:0"])

        // The pointer: (512, 384) on the 1024x768 screen, then a left click.
        let seen = try vm.eventsAfterSpiceClient(devices, "hostvmm virtio tablet", count: 7,
                                   afterClient: ["pointer", "512", "384"], says: "pointer-sent")
        // EV_ABS X and Y scaled to 0...32767 (512 * 32767 / 1023, 384 * 32767 / 767), then
        // EV_KEY BTN_LEFT (0x110) press and release; SYN_REPORTs in between.
        #expect(seen == ["3:0:16399", "3:1:16404", "1:272:1", "1:272:0"])
        _ = try vm.cli(["down", vm.name])
        #expect(vm.upExitCode() == 0)
    }

    /// Server mouse mode (no display, so spice-server offers no client mode): the client's
    /// relative motion and buttons reach the guest through the virtio mouse.
    @Test func serverModeMotionArrivesThroughTheMouse() throws {
        let vm = try BootedVM(name: "e2e-spicemouse", options: ["--no-display"])
        let devices = try vm.guestRun("cat /proc/bus/input/devices").output
        let seen = try vm.eventsAfterSpiceClient(devices, "hostvmm virtio mouse", count: 7,
                                   afterClient: ["motion", "5", "-3"], says: "motion-sent")
        // EV_REL REL_X 5, REL_Y -3, then EV_KEY BTN_RIGHT (0x111) press and release.
        #expect(seen == ["2:0:5", "2:1:-3", "1:273:1", "1:273:0"])
        _ = try vm.cli(["down", vm.name])
        #expect(vm.upExitCode() == 0)
    }
}
