import TestSupport
import AgentProtocol
import Foundation
import HostVMM
import Testing

/// `hostvmm up --display` against the real peers: the guest kernel's virtio_gpu
/// (fbdev emulation on fb0, fbcon), QEMU's vhost-user-gpu-pci frontend, our
/// VirtioGPU backend, SpiceBridge, and spice-gtk's spicy-screenshot as the client.
/// Pixels are compared at known positions, not just "an image came back".
@Suite(.serialized) struct DisplayEndToEndTests {
    static let screenshotTool = "/usr/bin/spicy-screenshot"
    static let clientInstalled = FileManager.default.isExecutableFile(atPath: screenshotTool)
    static let width = 1024, height = 768

    /// The test pattern: 64x64 blocks of distinct colours (xRGB).
    static func pattern(_ x: Int, _ y: Int, variant: Int = 0) -> UInt32 {
        let bx = x / 64, by = y / 64
        let r = UInt32((bx * 37 + 20 + variant * 101) & 0xff)
        let g = UInt32((by * 41 + 60 + variant * 53) & 0xff)
        let b = UInt32(((bx + by) * 23 + 100 + variant * 71) & 0xff)
        return r << 16 | g << 8 | b
    }

    /// fb0's bytes for rows [y0, y1) of the pattern: B, G, R, X per pixel, `stride` bytes a row.
    static func patternBytes(stride: Int, rows: Range<Int>, variant: Int = 0) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: stride * rows.count)
        for (i, y) in rows.enumerated() {
            for x in 0..<width {
                let p = pattern(x, y, variant: variant)
                let o = i * stride + 4 * x
                out[o] = UInt8(p & 0xff)
                out[o + 1] = UInt8((p >> 8) & 0xff)
                out[o + 2] = UInt8((p >> 16) & 0xff)
            }
        }
        return out
    }

    func display(_ vm: BootedVM) throws -> JSONValue {
        let r = try vm.cli(["display", vm.name])
        guard r.status == 0 else { throw TestFailure("hostvmm display: \(r.output)") }
        return try JSONParser.parse(r.output)
    }

    /// Polls `hostvmm display` until `done` holds or `timeout` passes; returns the last answer.
    func waitForDisplay(_ vm: BootedVM, timeout: TimeInterval, until done: (JSONValue) -> Bool) throws -> JSONValue {
        let deadline = Date().addingTimeInterval(timeout)
        var info = try display(vm)
        while !done(info) && Date() < deadline {
            Thread.sleep(forTimeInterval: 0.25)
            info = try display(vm)
        }
        return info
    }

    func screenshot(_ vm: BootedVM, port: Int, password: String) throws -> PPMImage {
        let path = "\(vm.stateRoot)/shot.ppm"
        try? FileManager.default.removeItem(atPath: path)
        let r = try runCommand(Self.screenshotTool, ["-h", "127.0.0.1", "-p", "\(port)", "-w", password, "-o", path],
                               timeout: 60)
        guard r.status == 0 else { throw TestFailure("spicy-screenshot exited \(String(describing: r.status)): \(r.output)") }
        return try PPMImage(path: path)
    }

    /// Screenshots until `done` holds (bounded): the guest's damage reaches us a few frames later.
    func screenshot(_ vm: BootedVM, port: Int, password: String, timeout: TimeInterval = 40,
                    until done: (PPMImage) -> Bool) throws -> PPMImage {
        let deadline = Date().addingTimeInterval(timeout)
        var shot = try screenshot(vm, port: port, password: password)
        while !done(shot) && Date() < deadline {
            Thread.sleep(forTimeInterval: 0.5)
            shot = try screenshot(vm, port: port, password: password)
        }
        return shot
    }

    @Test(.enabled(if: clientInstalled, "spicy-screenshot is not installed (spice-client-gtk)"))
    func guestFramebufferReachesSpiceClient() throws {
        let vm = try BootedVM(name: "e2e-gpu", options: ["--display"], extraEnvironment: ["HOSTVMM_TEST_HOOKS": "1"])
        let spice = try JSONParser.parse(try vm.cli(["spice", vm.name, "--json"]).output)
        let port = Int(try #require(spice["port"]?.int64Value))
        let passwordFile = try #require(spice["password-file"]?.stringValue)
        let password = try String(contentsOfFile: passwordFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)

        // 1. The guest driver bound, set a 1024x768 scanout, and fb0 exists with that size.
        var info = try waitForDisplay(vm, timeout: 60) { $0["scanout"]?["width"]?.int64Value == Int64(Self.width) }
        #expect(info["connected"] == .bool(true))
        #expect(info["scanout"]?["width"]?.int64Value == Int64(Self.width))
        #expect(info["scanout"]?["height"]?.int64Value == Int64(Self.height))
        let fb = try vm.guestRun("cat /sys/class/graphics/fb0/virtual_size /sys/class/graphics/fb0/stride")
        let fbLines = fb.output.split(separator: "\n").map(String.init)
        #expect(fbLines.first == "\(Self.width),\(Self.height)", "fb0: \(fb.output)")
        let stride = try #require(Int(fbLines.last ?? ""), "fb0 stride: \(fb.output)")
        #expect(stride >= Self.width * 4)

        func lit(_ img: PPMImage, rows: Range<Int>, columns: Range<Int>) -> Int {
            var n = 0
            for y in rows { for x in columns where img.pixel(x, y) != 0 { n += 1 } }
            return n
        }
        // 1b. The default boot shows text: the embedded init says "init done" on tty0
        //     (loglevel=4 keeps the kernel's own messages off the screen), one 8x16 text row.
        let booted = try screenshot(vm, port: port, password: password) { lit($0, rows: 0..<16, columns: 0..<200) > 100 }
        #expect(lit(booted, rows: 0..<16, columns: 0..<200) > 100, "no text in the top row after boot")
        #expect(lit(booted, rows: 0..<16, columns: 200..<Self.width) == 0)

        // 2. Console text through fbcon: the same line twice, so the two text rows
        //    (8x16 glyphs) must be identical and non-black, and the rest of the rows black.
        let text = "HOSTVMM virtio-gpu 0123456789"
        _ = try vm.guestRun("echo 0 > /sys/class/graphics/fbcon/cursor_blink; printf '\\033[2J\\033[H' > /dev/tty0;"
                            + " echo '\(text)' > /dev/tty0; echo '\(text)' > /dev/tty0")
        let textWidth = text.count * 8
        let console = try screenshot(vm, port: port, password: password) {
            lit($0, rows: 0..<32, columns: 0..<textWidth) > 300
        }
        let litTop = lit(console, rows: 0..<16, columns: 0..<textWidth)
        #expect(litTop > 150, "lit pixels in the first text row: \(litTop)")
        #expect(lit(console, rows: 0..<32, columns: (textWidth + 16)..<Self.width) == 0)
        var sameGlyphs = true
        for y in 0..<16 { for x in 0..<textWidth where console.pixel(x, y) != console.pixel(x, y + 16) { sameGlyphs = false } }
        #expect(sameGlyphs, "the two identical text lines render differently")

        // 3. A known pattern written to /dev/fb0 arrives pixel-exact.
        try vm.putFile("/tmp/pattern.raw", Self.patternBytes(stride: stride, rows: 0..<Self.height))
        // Blocks of 16 rows, not 1: the 6.12 kernel's drm_fb_helper_memory_range_to_clip turns a
        // write of exactly one whole scanline into an empty clip, so `bs=stride` is never flushed.
        let dd = try vm.guestRun("dd if=/tmp/pattern.raw of=/dev/fb0 bs=\(16 * stride) 2>&1")
        #expect(dd.code == 0, "dd: \(dd.output)")
        let probes = [(0, 0), (63, 0), (64, 0), (500, 400), (1023, 767), (1023, 0), (0, 767), (639, 447), (640, 448)]
        let shot = try screenshot(vm, port: port, password: password) { img in
            probes.allSatisfy { img.pixel($0.0, $0.1) == Self.pattern($0.0, $0.1) }
        }
        #expect(shot.width == Self.width && shot.height == Self.height)
        for (x, y) in probes {
            #expect(shot.pixel(x, y) == Self.pattern(x, y),
                    "(\(x),\(y)) got \(String(shot.pixel(x, y), radix: 16)) want \(String(Self.pattern(x, y), radix: 16))")
        }
        let expected = (0..<(Self.width * Self.height)).map { Self.pattern($0 % Self.width, $0 / Self.width) }
        let diff = shot.differences(from: expected)
        #expect(diff.count == 0, "\(diff.count) pixels differ: \(diff.first)")

        // 3b. All of that went through our virtio-gpu backend on the device thread and
        //     spice-server's worker thread, each under its seccomp allow-list, and QEMU
        //     under its -sandbox: the kernel says so for all three.
        let status = try vm.status()
        let sandbox = try #require(status["sandbox"], "status has no sandbox: \(status)")
        #expect(sandbox["qemu"]?["seccomp-mode"]?.int64Value == 2, "QEMU: \(sandbox)")
        let hostvmmPID = try #require(status["pids"]?["hostvmm"]?.int64Value)
        for thread in ["SPICE Worker", "hostvmm-devices"] {
            let entry = sandbox["threads"]?.arrayValue?.first { $0["thread"]?.stringValue == thread }
            let tid = try #require(entry?["tid"]?.int64Value, "no filtered \(thread) in \(sandbox)")
            let taskStatus = try String(contentsOfFile: "/proc/\(hostvmmPID)/task/\(tid)/status", encoding: .utf8)
            #expect(taskStatus.contains("Seccomp:\t2"), "\(thread) thread \(tid): \(taskStatus)")
            #expect(taskStatus.contains("Name:\t\(thread)"), "thread \(tid) is not \(thread)")
        }
        // hostvmm as a whole may start no process or program and open no network socket
        // once QEMU runs; the device thread may open no file and no socket at all.
        #expect(sandbox["hostvmm"]?["seccomp-mode"]?.int64Value == 2, "hostvmm: \(sandbox)")
        let probe = try ControlClient(vmName: vm.name, state: StateDirectory(path: vm.stateDir)).execute("sandbox-probe")
        for call in ["fork", "posix_spawn", "execve", "socket-inet"] {
            #expect(probe[call]?.int64Value == Int64(EPERM), "\(call) on hostvmm's main loop: \(JSONWriter.string(probe))")
        }
        #expect(probe["socket-unix"]?.int64Value == 0, "unix sockets must stay: \(JSONWriter.string(probe))")
        #expect(probe["device-thread"]?["filtered"]?.boolValue == true, "\(JSONWriter.string(probe))")
        for call in ["open", "socket-unix"] {
            #expect(probe["device-thread"]?[call]?.int64Value == Int64(EPERM),
                    "\(call) on the device thread: \(JSONWriter.string(probe))")
        }

        // 4. A band of rows rewritten: only those rows change (partial damage).
        try vm.putFile("/tmp/band.raw", Self.patternBytes(stride: stride, rows: 300..<400, variant: 1))
        let band = try vm.guestRun("dd if=/tmp/band.raw of=/dev/fb0 bs=\(20 * stride) seek=15 2>&1")
        #expect(band.code == 0, "dd: \(band.output)")
        let after = try screenshot(vm, port: port, password: password) { $0.pixel(10, 350) == Self.pattern(10, 350, variant: 1) }
        let expectedAfter = (0..<(Self.width * Self.height)).map { i -> UInt32 in
            let x = i % Self.width, y = i / Self.width
            return Self.pattern(x, y, variant: (300..<400).contains(y) ? 1 : 0)
        }
        let diffAfter = after.differences(from: expectedAfter)
        #expect(diffAfter.count == 0, "\(diffAfter.count) pixels differ after the band: \(diffAfter.first)")

        // 5. No error responses along the way; the guest still answers.
        info = try display(vm)
        #expect(info["errors"]?.int64Value == 0, "display: \(JSONWriter.string(info))")
        #expect((info["transfers"]?.int64Value ?? 0) > 0)
        #expect(try vm.cli(["ping", vm.name]).status == 0)
        let qemuLog = (try? String(contentsOfFile: "\(vm.stateDir)/qemu.log", encoding: .utf8)) ?? ""
        #expect(qemuLog.isEmpty, "qemu.log: \(qemuLog)")
        // The guest read our EDID (VIRTIO_GPU_F_EDID) for its connector.
        let edid = try vm.guestRun("cat /sys/class/drm/card*-Virtual-1/edid | wc -c")
        #expect(edid.output.trimmingCharacters(in: .whitespacesAndNewlines) == "128", "edid: \(edid.output)")

        // 5b. Hostile requests: the next 9 transfers and flushes the guest sends are altered
        //     (unknown resource, rectangle outside, offset past the backing). Each gets an
        //     error response; the guest's driver carries on and the display keeps working.
        let armed = try vm.cli(["display", vm.name, "--debug-corrupt", "9"])
        #expect(armed.output.contains("\"armed\": 9"), "hook: \(armed.output)")
        _ = try vm.guestRun("for i in 1 2 3 4 5 6 7 8 9 10 11 12; do echo hostile $i > /dev/tty0; sleep 0.2; done")
        info = try waitForDisplay(vm, timeout: 30) { ($0["errors"]?.int64Value ?? 0) >= 9 }
        #expect(info["errors"]?.int64Value == 9, "display: \(JSONWriter.string(info))")
        let lastError = info["last-error"]?.stringValue ?? ""
        #expect(lastError.contains("ERR_INVALID_PARAMETER") || lastError.contains("ERR_INVALID_RESOURCE_ID"), "\(lastError)")
        try vm.putFile("/tmp/pattern2.raw", Self.patternBytes(stride: stride, rows: 0..<Self.height, variant: 2))
        _ = try vm.guestRun("dd if=/tmp/pattern2.raw of=/dev/fb0 bs=\(16 * stride) 2>&1")
        let healed = try screenshot(vm, port: port, password: password) { $0.pixel(700, 700) == Self.pattern(700, 700, variant: 2) }
        let expected2 = (0..<(Self.width * Self.height)).map { Self.pattern($0 % Self.width, $0 / Self.width, variant: 2) }
        let diff2 = healed.differences(from: expected2)
        #expect(diff2.count == 0, "\(diff2.count) pixels differ after the hostile phase: \(diff2.first)")
        #expect(try vm.cli(["ping", vm.name]).status == 0)
        #expect(try display(vm)["broken"] == nil)

        // 6. A client's window size reaches the running guest (spice-gtk's monitors config ->
        //    our backend's display info and EDID; QEMU's D-Bus console raises the display event).
        let client = TestEnvironment.spiceDevicesClient
        let uri = "spice://127.0.0.1?port=\(port)&password=\(password)"
        func askForSize(_ width: Int, _ height: Int, signalled: Int) throws {
            // The client stays connected until its message has had its effect (see the client's usage).
            let sender = try WatchedProcess("/usr/bin/python3", [client, uri, "monitors", String(width), String(height)])
            defer { sender.signal(SIGKILL); _ = sender.waitForExit(timeout: 10) }
            #expect(sender.waitForLine(containing: "sent True", timeout: 60) != nil, "client: \(sender.transcript)")
            info = try waitForDisplay(vm, timeout: 30) { $0["resizes-signalled"]?.int64Value == Int64(signalled) }
            #expect(info["preferred"]?["width"]?.int64Value == Int64(width) && info["preferred"]?["height"]?.int64Value == Int64(height),
                    "display: \(JSONWriter.string(info)); client: \(sender.transcript)")
            #expect(info["resizes-signalled"]?.int64Value == Int64(signalled), "display: \(JSONWriter.string(info))")
        }
        #expect(info["live-resize"] == .bool(true), "display: \(JSONWriter.string(info))")
        // 6a. Larger: the connector's preferred mode becomes 1280x800 ("detect" re-probes without
        //     fbdev's limit). The console keeps 1024x768: fbdev cannot grow its framebuffer, and
        //     the EDID's smaller modes give it one that fits instead of a dark screen.
        try askForSize(1280, 800, signalled: 1)
        let connector = "/sys/class/drm/card0-Virtual-1"
        var modes = ""
        let modesDeadline = Date().addingTimeInterval(30)
        repeat {
            modes = try vm.guestRun("echo detect > \(connector)/status; cat \(connector)/modes").output
            if modes.hasPrefix("1280x800\n") { break }
            Thread.sleep(forTimeInterval: 0.5)
        } while Date() < modesDeadline
        #expect(modes.hasPrefix("1280x800\n") && modes.contains("1024x768"), "connector modes: \(modes)")
        #expect(try vm.guestRun("cat \(connector)/enabled").output.hasPrefix("enabled"))
        // The modeset leaves the scanout off until the console next draws (6.12's virtio_gpu
        // sets it again at the first plane update after a modeset); the SPICE client keeps
        // the last picture meanwhile. The cursor blink is off, so draw.
        _ = try vm.guestRun("echo resized > /dev/tty0")
        info = try waitForDisplay(vm, timeout: 30) { $0["scanout"]?["width"]?.int64Value == Int64(Self.width) }
        let guestView = try vm.guestRun("cat \(connector)/modes \(connector)/enabled \(connector)/dpms").output
        #expect(info["scanout"]?["width"]?.int64Value == Int64(Self.width) && info["scanout"]?["height"]?.int64Value == Int64(Self.height),
                "display: \(JSONWriter.string(info)); guest: \(guestView)")
        // 6b. Smaller: the console switches to 800x600 at once, and so does the client's primary surface.
        try askForSize(800, 600, signalled: 2)
        info = try waitForDisplay(vm, timeout: 30) { $0["scanout"]?["width"]?.int64Value == 800 }
        #expect(info["scanout"]?["width"]?.int64Value == 800 && info["scanout"]?["height"]?.int64Value == 600,
                "display: \(JSONWriter.string(info))")
        #expect(info["spice"]?["width"]?.int64Value == 800 && info["spice"]?["height"]?.int64Value == 600)
        let small = try screenshot(vm, port: port, password: password)
        #expect(small.width == 800 && small.height == 600)
        #expect(try vm.cli(["ping", vm.name]).status == 0)

        // 7. A fresh boot takes the size the client asked for last: fbdev allocates 1280x800.
        try askForSize(1280, 800, signalled: 3)
        let reboot = try vm.cli(["shutdown", vm.name, "--reboot"])
        #expect(reboot.status == 0, "reboot: \(reboot.output)")
        #expect(vm.waitForOccurrence("agent ready after", count: 2, timeout: BootedVM.bootTimeout))
        info = try waitForDisplay(vm, timeout: 60) { $0["scanout"]?["width"]?.int64Value == 1280 }
        #expect(info["scanout"]?["width"]?.int64Value == 1280 && info["scanout"]?["height"]?.int64Value == 800,
                "display after reboot: \(JSONWriter.string(info))")
        #expect(info["spice"]?["width"]?.int64Value == 1280 && info["spice"]?["height"]?.int64Value == 800)
        let big = try screenshot(vm, port: port, password: password)
        #expect(big.width == 1280 && big.height == 800)
        let fbAfter = try vm.guestRun("cat /sys/class/graphics/fb0/virtual_size")
        #expect(fbAfter.output.trimmingCharacters(in: .whitespacesAndNewlines) == "1280,800")
    }
}
