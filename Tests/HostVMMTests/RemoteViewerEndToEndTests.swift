import TestSupport
import AgentProtocol
import Foundation
import Testing

/// What a person gets with `hostvmm up` and remote-viewer, the SPICE client most
/// people use (virt-viewer), under Xvfb and driven by xdotool: the guest's screen
/// in the window, typed keys and pointer moves in the guest's evdev, a command typed
/// into the console's shell, and the
/// window's size as the guest's mode. Default VM options: display and inputs on.
@Suite(.serialized, .timeLimit(.minutes(30))) struct RemoteViewerEndToEndTests {
    static let remoteViewer = "/usr/bin/remote-viewer"
    static let xdotool = "/usr/bin/xdotool"
    static let installed = [remoteViewer, xdotool, Xvfb.path].allSatisfy { FileManager.default.isExecutableFile(atPath: $0) }
    /// The colour the guest paints (0xRRGGBB): fb0 takes B, G, R, X bytes.
    static let paint: UInt32 = 0xC0_80_40

    func runXdotool(_ display: String, _ arguments: [String]) throws -> String {
        let r = try runCommand(Self.xdotool, arguments, environment: ["DISPLAY": display], timeout: 30)
        guard r.status == 0 else { throw TestFailure("xdotool \(arguments.joined(separator: " ")): \(r.output)") }
        return r.output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @Test(.enabled(if: installed, "remote-viewer, xdotool or Xvfb is missing (scripts/setup.sh installs virt-viewer, xdotool, xvfb)"))
    func remoteViewerShowsTheScreenTypesPointsAndResizesTheGuest() throws {
        let vm = try BootedVM(name: "e2e-viewer")
        let dir = try TestEnvironment.temporaryDirectory("viewer")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let x = try Xvfb(screen: "1280x1024x24", fbdir: dir)
        defer { x.stop() }
        let uri = try vm.cli(["spice", vm.name]).output.trimmingCharacters(in: .whitespacesAndNewlines)
        let viewer = try WatchedProcess(Self.remoteViewer, [uri], environment: ["DISPLAY": x.display])
        defer { viewer.signal(SIGTERM); _ = viewer.waitForExit(timeout: 10) }
        let window = try runXdotool(x.display, ["search", "--sync", "--onlyvisible", "--pid", String(viewer.pid)])
            .split(separator: "\n").last.map(String.init) ?? ""

        // 1. The screen: the guest fills fb0 with one colour; the window shows exactly that
        //    colour over (nearly) the whole 1024x768 screen.
        let stride = try #require(Int(try vm.guestRun("cat /sys/class/graphics/fb0/stride").output
            .trimmingCharacters(in: .whitespacesAndNewlines)), "fb0 has no stride")
        let pixel: [UInt8] = [UInt8(Self.paint & 0xff), UInt8(Self.paint >> 8 & 0xff), UInt8(Self.paint >> 16), 0]
        try vm.putFile("/tmp/paint.raw", [UInt8]((0..<(stride / 4 * 768)).flatMap { _ in pixel }))
        let dd = try vm.guestRun("echo 0 > /sys/class/graphics/fbcon/cursor_blink; dd if=/tmp/paint.raw of=/dev/fb0 bs=\(16 * stride) 2>&1")
        #expect(dd.code == 0, "dd: \(dd.output)")
        func painted() throws -> Int { try x.screen().pixels.reduce(0) { $0 + ($1 == Self.paint ? 1 : 0) } }
        var shown = 0
        let deadline = Date().addingTimeInterval(40)
        repeat {
            shown = try painted()
            if shown >= 1024 * 768 * 95 / 100 { break }
            Thread.sleep(forTimeInterval: 0.5)
        } while Date() < deadline
        #expect(shown >= 1024 * 768 * 95 / 100, "pixels of the guest's colour in remote-viewer's window: \(shown); viewer: \(viewer.transcript)")

        // 2. Keys typed into the window reach the guest's virtio keyboard.
        let devices = try vm.guestRun("cat /proc/bus/input/devices").output
        let keyboard = try #require(GuestEvdev.findDevice(devices, "hostvmm virtio keyboard"), "\(devices)")
        let tablet = try #require(GuestEvdev.findDevice(devices, "hostvmm virtio tablet"), "\(devices)")
        try vm.captureEvents(keyboard.event, into: "/tmp/rv-keys.bin", count: 4)
        // Two moves, (300, 300) then (400, 350): ABS_X, ABS_Y and SYN_REPORT each.
        try vm.captureEvents(tablet.event, into: "/tmp/rv-pointer.bin", count: 6)
        _ = try runXdotool(x.display, ["mousemove", "--window", window, "300", "300"])
        _ = try runXdotool(x.display, ["windowfocus", "--sync", window])
        _ = try runXdotool(x.display, ["key", "a"])
        let keys = try vm.readEvents("/tmp/rv-keys.bin", count: 4)
        #expect(keys.filter { $0.type == 1 }.map { "\($0.code):\($0.value)" } == ["30:1", "30:0"], "guest events: \(keys)")

        // 3. The pointer over the window moves the guest's tablet (client mouse mode).
        _ = try runXdotool(x.display, ["mousemove", "--window", window, "400", "350"])
        // Where the window's picture sits on the screen is remote-viewer's business; that the
        // second position lies right of and below the first is not.
        let moves = try vm.readEvents("/tmp/rv-pointer.bin", count: 6)
        let xs = moves.filter { $0.type == 3 && $0.code == 0 }.map(\.value)
        let ys = moves.filter { $0.type == 3 && $0.code == 1 }.map(\.value)
        #expect(xs.count == 2 && ys.count == 2 && xs.allSatisfy { (1...32767).contains($0) }, "guest events: \(moves)")
        #expect(xs.count == 2 && xs[1] > xs[0] && ys.count == 2 && ys[1] > ys[0], "guest events: \(moves)")

        // 4. A smaller window: the guest's console switches to the window's size.
        _ = try runXdotool(x.display, ["windowsize", window, "820", "700"])
        let resizeDeadline = Date().addingTimeInterval(30)
        var info = try JSONParser.parse(try vm.cli(["display", vm.name]).output)
        while Date() < resizeDeadline {
            let scanout = info["scanout"]?["width"]?.int64Value ?? 0
            if scanout > 0 && scanout < 1024 && info["scanout"] == info["preferred"] { break }
            Thread.sleep(forTimeInterval: 0.25)
            info = try JSONParser.parse(try vm.cli(["display", vm.name]).output)
        }
        let width = info["scanout"]?["width"]?.int64Value ?? 0
        #expect(width > 0 && width < 1024 && info["scanout"] == info["preferred"], "display: \(JSONWriter.string(info))")
        #expect((info["resizes-signalled"]?.int64Value ?? 0) >= 1)
        #expect(info["errors"]?.int64Value == 0)

        // 5. The console is a shell: a command typed into the window runs, and it and its
        //    output are on the guest's screen (tty1's text, /dev/vcs1). Ctrl-U drops the "a".
        _ = try runXdotool(x.display, ["key", "--window", window, "ctrl+u"])
        _ = try runXdotool(x.display, ["type", "--window", window, "echo viewer.typed.$((6*7))"])
        _ = try runXdotool(x.display, ["key", "--window", window, "Return"])
        let screen = try vm.guestRun("for i in $(seq 1 100); do grep -q viewer.typed.42 /dev/vcs1 && break; sleep 0.1; done; tr -s ' ' < /dev/vcs1")
        #expect(screen.output.contains("echo viewer.typed.$((6*7))") && screen.output.contains("viewer.typed.42"),
                "tty1: \(screen.output)")
    }
}
