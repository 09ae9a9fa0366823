import TestSupport
import Foundation
import LinuxSystem
@testable import SpiceBridge
import Testing

/// SpiceCore's loop is one per process: in-process SPICE servers of
/// different suites (these, X11ClipboardTests) take turns.

/// An in-process SpiceServer + SpiceDisplay (+ SpiceInputs) on a LoopThread,
/// listening on 127.0.0.1 with a ticket. No VM: the test is the producer.
final class DisplayHarness: @unchecked Sendable {
    let loop: LoopThread
    private(set) var server: SpiceServer!
    private(set) var display: SpiceDisplay!
    private(set) var inputs: SpiceInputs?
    let port: Int
    let ticket = "disp-\(UInt32.random(in: 0...UInt32.max))"
    private var agentPeer: Int32 = -1
    var uri: String { "spice://127.0.0.1?port=\(port)&password=\(ticket)" }

    init(width: Int, height: Int, inputs withInputs: Bool = false, running: Bool = true) throws {
        loop = try InProcessSpice.acquireLoop()
        guard let port = SpiceServer.freePort(address: "127.0.0.1", from: 6100) else {
            loop.stop()
            InProcessSpice.gate.signal()
            throw TestFailure("no free port")
        }
        self.port = port
        let made: Result<Void, SpiceError>? = loop.onLoop(timeout: 20) { [self] finish in
            do throws(SpiceError) {
                let server = try SpiceServer(config: SpiceConfig(listen: .tcp(address: "127.0.0.1", port: port),
                                                                 access: .ticket(ticket), name: "display-test"),
                                             loop: loop.loop)
                self.server = server
                display = try SpiceDisplay(server: server, width: width, height: height)
                if withInputs { self.inputs = SpiceInputs(server: server) }
                server.setRunning(running)
                finish(.success(()))
            } catch {
                finish(.failure(error))
            }
        }
        guard case .success? = made else {
            stop()
            throw TestFailure("SPICE server: \(String(describing: made))")
        }
    }

    /// A vdagent whose guest end the test drains and ignores: enough for the
    /// client to see an agent (and send monitors configs).
    func attachSilentAgent() throws {
        var fds: [Int32] = [0, 0]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0 else { throw TestFailure("socketpair") }
        agentPeer = fds[1]
        let peer = fds[1]
        Thread.detachNewThread {
            var buffer = [UInt8](repeating: 0, count: 65536)
            while buffer.withUnsafeMutableBytes({ read(peer, $0.baseAddress, $0.count) }) > 0 {}
        }
        loop.sync { [self] in server.attachAgent(fd: fds[0], loop: loop.loop) }
    }

    func stop() {
        loop.sync { [self] in
            display?.close()
            server?.detachAgent()
            display = nil
            inputs = nil
            server = nil  // spice_server_destroy, on the loop thread
        }
        loop.stop()
        if agentPeer >= 0 { shutdown(agentPeer, Int32(SHUT_RDWR)) }
        InProcessSpice.gate.signal()
    }

    /// Until the worker has fetched everything queued (bounded).
    func waitDrained(timeout: TimeInterval = 20) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            let s = display.stats
            if s.queued == 0 && s.fetched > 0 { return true }
            usleep(5000)
        }
        return false
    }

    func screenshot(_ path: String) throws -> PPMImage {
        try? FileManager.default.removeItem(atPath: path)
        let r = try runCommand("/usr/bin/spicy-screenshot", ["-h", "127.0.0.1", "-p", "\(port)", "-w", ticket, "-o", path],
                               timeout: 60)
        guard r.status == 0 else { throw TestFailure("spicy-screenshot exited \(String(describing: r.status)): \(r.output)") }
        return try PPMImage(path: path)
    }
}

/// A framebuffer the test owns, 32-bit xRGB (0x00RRGGBB, bytes B,G,R,X).
final class TestFramebuffer {
    let width: Int
    let height: Int
    let pixels: UnsafeMutablePointer<UInt32>

    init(width: Int, height: Int) {
        self.width = width
        self.height = height
        pixels = .allocate(capacity: width * height)
        pixels.initialize(repeating: 0, count: width * height)
    }

    deinit { pixels.deallocate() }

    var view: SpiceFramebuffer {
        SpiceFramebuffer(pixels: UnsafeRawPointer(pixels), width: width, height: height, stride: width * 4)
    }

    subscript(x: Int, y: Int) -> UInt32 {
        get { pixels[y * width + x] }
        set { pixels[y * width + x] = newValue }
    }

    func fill(_ r: SpiceRect, _ color: (Int, Int) -> UInt32) {
        for y in r.y..<(r.y + r.height) { for x in r.x..<(r.x + r.width) { self[x, y] = color(x, y) } }
    }

    /// Four quadrants: red, green / blue, a gradient (R by x, G by y, B 0x80).
    func paintQuadrants() {
        let hw = width / 2, hh = height / 2
        fill(SpiceRect(x: 0, y: 0, width: hw, height: hh)) { _, _ in 0xFF0000 }
        fill(SpiceRect(x: hw, y: 0, width: width - hw, height: hh)) { _, _ in 0x00FF00 }
        fill(SpiceRect(x: 0, y: hh, width: hw, height: height - hh)) { _, _ in 0x0000FF }
        fill(SpiceRect(x: hw, y: hh, width: width - hw, height: height - hh)) { [width, height] x, y in
            UInt32(x * 255 / (width - 1)) << 16 | UInt32(y * 255 / (height - 1)) << 8 | 0x80
        }
    }

    func copy() -> [UInt32] { Array(UnsafeBufferPointer(start: pixels, count: width * height)) }
}

/// A binary PPM (P6), as spicy-screenshot writes it.
struct PPMImage {
    let width: Int
    let height: Int
    let rgb: [UInt8]

    init(path: String) throws {
        let data = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        var i = 0
        func token() -> String {
            while i < data.count {
                if data[i] == UInt8(ascii: "#") { while i < data.count && data[i] != 0x0A { i += 1 } }
                else if data[i] == 0x20 || data[i] == 0x0A || data[i] == 0x0D || data[i] == 0x09 { i += 1 }
                else { break }
            }
            let start = i
            while i < data.count, ![0x20, 0x0A, 0x0D, 0x09].contains(data[i]) { i += 1 }
            return String(decoding: data[start..<i], as: UTF8.self)
        }
        guard token() == "P6", let w = Int(token()), let h = Int(token()), token() == "255" else {
            throw TestFailure("\(path) is not an 8-bit P6 PPM")
        }
        i += 1  // the single whitespace after maxval
        guard data.count - i >= w * h * 3 else { throw TestFailure("\(path): \(data.count - i) bytes of pixels for \(w)x\(h)") }
        width = w
        height = h
        rgb = Array(data[i..<(i + w * h * 3)])
    }

    func pixel(_ x: Int, _ y: Int) -> UInt32 {
        let o = (y * width + x) * 3
        return UInt32(rgb[o]) << 16 | UInt32(rgb[o + 1]) << 8 | UInt32(rgb[o + 2])
    }

    /// Pixels that differ from `expected` (xRGB, row-major, same size): count and the first few.
    func differences(from expected: [UInt32], in rect: SpiceRect? = nil) -> (count: Int, first: [String]) {
        let r = rect ?? SpiceRect(x: 0, y: 0, width: width, height: height)
        var count = 0
        var first: [String] = []
        for y in r.y..<(r.y + r.height) {
            for x in r.x..<(r.x + r.width) {
                let want = expected[y * width + x] & 0xFFFFFF
                let got = pixel(x, y)
                if got != want {
                    count += 1
                    if first.count < 5 { first.append("(\(x),\(y)) got \(String(got, radix: 16)) want \(String(want, radix: 16))") }
                }
            }
        }
        return (count, first)
    }
}

final class Recorder<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [T] = []
    func add(_ t: T) { lock.lock(); items.append(t); lock.unlock() }
    var all: [T] { lock.lock(); defer { lock.unlock() }; return items }

    /// Waits (bounded) until `done` holds for the items.
    func wait(timeout: TimeInterval, until done: ([T]) -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if done(all) { return true }
            usleep(10000)
        }
        return done(all)
    }
}

/// `needles` appear in `haystack` in this order (not necessarily adjacent).
func isSubsequence<T: Equatable>(_ needles: [T], of haystack: [T]) -> Bool {
    var i = 0
    for h in haystack where i < needles.count && h == needles[i] { i += 1 }
    return i == needles.count
}

@Suite(.serialized, .timeLimit(.minutes(30))) struct SpiceDisplayTests {
    static let client = TestEnvironment.spiceDevicesClient
    static let screenshotTool = "/usr/bin/spicy-screenshot"
    static let clientsInstalled = FileManager.default.isExecutableFile(atPath: screenshotTool)

    // MARK: Pure parts

    @Test func damageIsClippedMergedAndBounded() {
        typealias R = SpiceRect
        let merge = { (rs: [R]) in SpiceDisplay.mergeDamage(rs, width: 800, height: 600, maxRects: 16) }
        // Clipped to the surface; empty and outside rectangles dropped.
        #expect(merge([R(x: -10, y: -10, width: 20, height: 30), R(x: 900, y: 0, width: 5, height: 5),
                       R(x: 5, y: 5, width: 0, height: 9)]) == [R(x: 0, y: 0, width: 10, height: 20)])
        #expect(merge([R(x: 790, y: 590, width: 100, height: 100)]) == [R(x: 790, y: 590, width: 10, height: 10)])
        // Overlapping ones merge, distant ones stay apart.
        #expect(merge([R(x: 0, y: 0, width: 100, height: 100), R(x: 50, y: 0, width: 100, height: 100)])
            == [R(x: 0, y: 0, width: 150, height: 100)])
        #expect(merge([R(x: 0, y: 0, width: 10, height: 10), R(x: 500, y: 500, width: 10, height: 10)]).count == 2)
        // More than 16 separate rectangles: their bounding box.
        let many = (0..<20).map { R(x: $0 * 30, y: $0 * 20, width: 5, height: 5) }
        #expect(merge(many) == [R(x: 0, y: 0, width: 575, height: 385)])
    }

    @Test func scancodesBecomeLinuxKeyCodes() {
        var d = PCScancodeDecoder()
        func run(_ bytes: [UInt8]) -> [PCScancodeDecoder.KeyEvent] { bytes.compactMap { d.feed($0) } }
        typealias K = PCScancodeDecoder.KeyEvent
        #expect(run([0x1E, 0x9E]) == [K(code: 30, pressed: true), K(code: 30, pressed: false)])  // a
        #expect(run([0x01, 0x58, 0x57, 0x56]).map(\.code) == [1, 88, 87, 86])  // Esc, F12, F11, 102nd
        #expect(run([0xE0, 0x48, 0xE0, 0xC8]) == [K(code: 103, pressed: true), K(code: 103, pressed: false)])  // Up
        #expect(run([0xE0, 0x1C, 0xE0, 0x1D, 0xE0, 0x38, 0xE0, 0x5B, 0xE0, 0x53, 0xE0, 0x35]).map(\.code)
            == [96, 97, 100, 125, 111, 98])  // KP Enter, RCtrl, RAlt, LMeta, Delete, KP /
        #expect(run([0xE1, 0x1D, 0x45, 0xE1, 0x9D, 0xC5]) == [K(code: 119, pressed: true), K(code: 119, pressed: false)])
        // PrintScreen as a keyboard sends it (fake shift dropped) and as spice-gtk does (0x54).
        #expect(run([0xE0, 0x2A, 0xE0, 0x37, 0xE0, 0xB7, 0xE0, 0xAA]) == [K(code: 99, pressed: true), K(code: 99, pressed: false)])
        #expect(run([0x54]) == [K(code: 99, pressed: true)])
        #expect(run([0x45, 0xC5, 0x3A, 0x46]).map(\.code) == [69, 69, 58, 70])  // NumLock, CapsLock, ScrollLock
        #expect(run([0xE0, 0x20, 0xE0, 0x2E, 0xE0, 0x30]).map(\.code) == [113, 114, 115])  // mute, vol-, vol+
        let before = d.unknown
        #expect(run([0x00, 0xE2, 0x10, 0x7F]).isEmpty)
        #expect(d.unknown == before + 3)
        #expect(run([0x2C]) == [K(code: 44, pressed: true)])  // the decoder is back in step
        #expect(KeyboardLEDs(linuxLEDBits: 0b011) == [.numLock, .capsLock])
        #expect(MouseButtons([.left, .middle]).linuxChanges(from: [.left, .right]).map { "\($0.code) \($0.pressed)" }
            == ["273 false", "274 true"])
    }

    // MARK: With real clients

    /// Known patterns, read back pixel for pixel through spicy-screenshot:
    /// quadrants and a gradient, a partial update (copied at the call: the
    /// framebuffer is scribbled on right after), and a resize to 1024x768.
    @Test(.enabled(if: clientsInstalled, "spicy-screenshot is not installed (spice-client-gtk)"))
    func screenshotsMatchTheFramebufferExactly() throws {
        let dir = try TestEnvironment.temporaryDirectory("spice-display")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let h = try DisplayHarness(width: 800, height: 600)
        defer { h.stop() }

        let fb = TestFramebuffer(width: 800, height: 600)
        fb.paintQuadrants()
        var start = Date()
        h.display.flush(damage: [SpiceRect(x: 0, y: 0, width: 800, height: 600)], from: fb.view)  // not the loop thread
        let flushMs = Date().timeIntervalSince(start) * 1000
        #expect(h.waitDrained(), "the worker did not fetch the update: \(h.display.stats)")
        start = Date()
        let shot1 = try h.screenshot("\(dir)/1.ppm")
        print("spice display: 800x600 flush \(String(format: "%.1f", flushMs)) ms; spicy-screenshot \(String(format: "%.2f", Date().timeIntervalSince(start))) s")
        #expect(shot1.width == 800 && shot1.height == 600)
        #expect(shot1.pixel(10, 10) == 0xFF0000 && shot1.pixel(790, 10) == 0x00FF00 && shot1.pixel(10, 590) == 0x0000FF)
        #expect(shot1.pixel(799, 599) == 0xFFFF80 && shot1.pixel(400, 300) == UInt32(400 * 255 / 799) << 16 | UInt32(300 * 255 / 599) << 8 | 0x80)
        let d1 = shot1.differences(from: fb.copy())
        #expect(d1.count == 0, "first screenshot: \(d1.count) pixels differ: \(d1.first)")

        // A partial update: a checkerboard in one rectangle.
        var expected = fb.copy()
        let rect = SpiceRect(x: 300, y: 200, width: 100, height: 50)
        fb.fill(rect) { x, y in (x ^ y) & 1 == 0 ? 0xFF00FF : 0x00FFFF }
        for y in rect.y..<(rect.y + rect.height) { for x in rect.x..<(rect.x + rect.width) { expected[y * 800 + x] = fb[x, y] } }
        h.display.update(rect: rect, from: fb.view)
        // The producer's memory changes right after the call, and elsewhere without damage: neither may show.
        fb.fill(rect) { _, _ in 0 }
        fb.fill(SpiceRect(x: 0, y: 0, width: 50, height: 50)) { _, _ in 0x123456 }
        #expect(h.waitDrained())
        let shot2 = try h.screenshot("\(dir)/2.ppm")
        let d2 = shot2.differences(from: expected)
        #expect(d2.count == 0, "after the partial update: \(d2.count) pixels differ: \(d2.first)")
        #expect(shot2.differences(from: expected, in: rect).count == 0)
        #expect(shot2.pixel(300, 200) == 0xFF00FF && shot2.pixel(301, 200) == 0x00FFFF)

        // Resize: destroy + create the primary, then a new frame.
        let resized: Bool? = h.loop.onLoop(timeout: 20) { finish in
            do { try h.display.resize(width: 1024, height: 768); finish(true) } catch { finish(false) }
        }
        #expect(resized == true)
        let big = TestFramebuffer(width: 1024, height: 768)
        big.paintQuadrants()
        big.fill(SpiceRect(x: 1000, y: 0, width: 24, height: 24)) { _, _ in 0xABCDEF }
        h.display.flush(damage: [SpiceRect(x: 0, y: 0, width: 1024, height: 768)], from: big.view)
        #expect(h.waitDrained())
        let shot3 = try h.screenshot("\(dir)/3.ppm")
        #expect(shot3.width == 1024 && shot3.height == 768)
        if shot3.width == 1024 && shot3.height == 768 {
            let d3 = shot3.differences(from: big.copy())
            #expect(d3.count == 0, "after the resize: \(d3.count) pixels differ: \(d3.first)")
            #expect(shot3.pixel(1010, 10) == 0xABCDEF)
        }
        let s = h.display.stats
        print("spice display: \(s.drawables) drawables, \(s.fetched) fetched, \(s.released) released, \(s.outstanding) held by the server")
    }

    /// No consumer (VM stopped: the worker does not fetch): the queue stays
    /// bounded, and once running the newest frame is what clients see.
    @Test(.enabled(if: clientsInstalled, "spicy-screenshot is not installed (spice-client-gtk)"))
    func theQueueStaysBoundedWithoutAConsumer() throws {
        let dir = try TestEnvironment.temporaryDirectory("spice-bound")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let h = try DisplayHarness(width: 800, height: 600, running: false)
        defer { h.stop() }
        let fb = TestFramebuffer(width: 800, height: 600)
        fb.paintQuadrants()
        let frameBytes = 800 * 600 * 4
        var peak = 0
        for i in 0..<300 {
            // Many small rectangles and some full frames.
            let r = SpiceRect(x: (i * 37) % 700, y: (i * 53) % 500, width: 100, height: 100)
            fb.fill(r) { x, y in UInt32((x + y + i) & 0xFF) << 8 }
            h.display.flush(damage: i % 50 == 0 ? [SpiceRect(x: 0, y: 0, width: 800, height: 600)] : [r], from: fb.view)
            peak = max(peak, h.display.stats.outstandingBytes)
        }
        let s = h.display.stats
        print("spice display: stopped consumer, 300 flushes: peak \(peak / 1024) KiB outstanding, \(s.queued) queued, coalesced \(s.coalesced)x")
        #expect(s.coalesced > 0)
        #expect(peak <= 2 * frameBytes + frameBytes, "outstanding pixel bytes reached \(peak)")
        #expect(s.queued <= SpiceDisplay.maxQueuedDrawables)

        h.loop.sync { h.server.setRunning(true) }
        #expect(h.waitDrained())
        let shot = try h.screenshot("\(dir)/bounded.ppm")
        let d = shot.differences(from: fb.copy())
        #expect(d.count == 0, "after coalescing: \(d.count) pixels differ: \(d.first)")
    }

    /// Cursor shape and hide reach spice-gtk's cursor channel.
    @Test(.enabled(if: clientsInstalled, "spice-gtk is not installed"))
    func cursorReachesTheClient() throws {
        let h = try DisplayHarness(width: 800, height: 600)
        defer { h.stop() }
        var argb = [UInt32](repeating: 0x8000FF00, count: 32 * 32)
        argb[0] = 0xFF112233
        h.display.setCursor(width: 32, height: 32, hotX: 3, hotY: 4, argb: argb, x: 100, y: 100)
        h.display.moveCursor(x: 120, y: 130)
        let client = try WatchedProcess("/usr/bin/python3", [Self.client, h.uri, "cursor"])
        defer { client.signal(SIGTERM); _ = client.waitForExit(timeout: 10) }
        #expect(client.waitForLine(containing: "cursor 32 32 3 4 rgba 112233ff", timeout: 30) != nil, "\(client.transcript)")
        h.display.hideCursor()
        #expect(client.waitForLine(containing: "hide", timeout: 10) != nil, "\(client.transcript)")
        // A resize resets the cursor; a visible one is defined again.
        h.display.setCursor(width: 16, height: 16, hotX: 0, hotY: 0, argb: argb, x: 1, y: 1)
        #expect(client.waitForLine(containing: "cursor 16 16 0 0", timeout: 10) != nil, "\(client.transcript)")
        let lines = client.output.count
        h.loop.sync { try? h.display.resize(width: 640, height: 480) }
        #expect(client.waitForLine(containing: "cursor 16 16 0 0", after: lines, timeout: 10) != nil, "\(client.transcript)")
    }

    /// A client resizing its window: spice-gtk's monitors config reaches the
    /// producer's callback (through the agent channel, so an agent must be
    /// attached), which resizes the display as a virtio-gpu producer would.
    @Test(.enabled(if: clientsInstalled, "spice-gtk is not installed"))
    func clientMonitorsConfigReachesTheProducer() throws {
        let h = try DisplayHarness(width: 800, height: 600)
        defer { h.stop() }
        let configs = Recorder<[SpiceMonitorConfig]>()
        h.loop.sync {
            h.display.onClientMonitorsConfig = { monitors in
                configs.add(monitors)
                if let m = monitors.first { try? h.display.resize(width: Int(m.width), height: Int(m.height)) }
            }
        }
        try h.attachSilentAgent()
        // The client stays connected until killed: its message may leave after "sent" (see its usage).
        let sender = try WatchedProcess("/usr/bin/python3", [Self.client, h.uri, "monitors", "1024", "768"])
        defer { sender.signal(SIGKILL); _ = sender.waitForExit(timeout: 10) }
        #expect(sender.waitForLine(containing: "sent True", timeout: 60) != nil, "\(sender.transcript)")
        #expect(configs.wait(timeout: 10) { !$0.isEmpty }, "no monitors config; client: \(sender.transcript)")
        let first = configs.all.first?.first
        #expect(first?.width == 1024 && first?.height == 768, "\(configs.all)")
        var size = (0, 0)
        h.loop.sync { size = (h.display.width, h.display.height) }
        #expect(size == (1024, 768))
    }

    /// Keys, tablet and relative mouse from spice-gtk reach the closures as
    /// Linux key codes and surface positions; get_leds decides lock resyncs.
    @Test(.enabled(if: clientsInstalled, "spice-gtk is not installed"))
    func inputsReachTheClosures() throws {
        let h = try DisplayHarness(width: 800, height: 600, inputs: true)
        defer { h.stop() }
        typealias K = PCScancodeDecoder.KeyEvent
        let keys = Recorder<K>()
        let tablet = Recorder<SpiceTabletEvent>()
        let mouse = Recorder<SpiceMouseEvent>()
        h.loop.sync {
            guard let inputs = h.inputs else { return }
            inputs.onKey = { keys.add($0) }
            inputs.onTablet = { tablet.add($0) }
            inputs.onMouse = { mouse.add($0) }
            inputs.setLEDs([.numLock])  // the guest has NumLock on
        }
        let client = try WatchedProcess("/usr/bin/python3", [Self.client, h.uri, "inputs"])
        defer { client.signal(SIGTERM); _ = client.waitForExit(timeout: 10) }
        #expect(client.waitForLine(containing: "phase1", timeout: 60) != nil, "\(client.transcript)")
        let lastPosition = SpiceTabletEvent.position(x: 799, y: 599, buttons: [])
        #expect(keys.wait(timeout: 10) { $0.contains(K(code: 44, pressed: false)) }, "keys: \(keys.all)")
        #expect(tablet.wait(timeout: 10) { $0.last == lastPosition }, "tablet: \(tablet.all)")

        // Lock resyncs: the server injects NumLock presses whenever the client's lock
        // state differs from its own (initialised by setLEDs, toggled by its own
        // injections; get_leds is what it tells a client at connect). The client
        // connects with locks 0 against our NumLock on: at least one resync pair.
        let all = keys.all
        #expect(Array(all.prefix(2)) == [K(code: 69, pressed: true), K(code: 69, pressed: false)], "keys: \(all)")
        let fromA = Array(all.drop { $0 != K(code: 30, pressed: true) }).filter { $0.code != 69 }
        let expectedKeys: [K] = [
            K(code: 30, pressed: true), K(code: 30, pressed: false),    // a
            K(code: 103, pressed: true), K(code: 103, pressed: false),  // Up (e0 48)
            K(code: 119, pressed: true), K(code: 119, pressed: false),  // Pause (e1 1d 45)
            K(code: 96, pressed: true), K(code: 96, pressed: false),    // KP Enter (e0 1c)
            K(code: 44, pressed: true), K(code: 44, pressed: false),    // z
        ]
        #expect(fromA == expectedKeys, "keys: \(all)")
        let t = tablet.all
        // Set when the tablet was registered (before the closure was): the primary's size.
        var size: (width: Int32, height: Int32)?
        h.loop.sync { size = h.inputs?.logicalSize }
        #expect(size?.width == 800 && size?.height == 600)
        #expect(t.contains { if case .position(let x, let y, _) = $0 { return (x, y) == (100, 200) || (x, y) == (101, 201) } else { return false } })
        #expect(isSubsequence([.buttons([.left]), .buttons([]), .wheel(-1, buttons: [])], of: t), "\(t)")
        #expect(h.inputs?.unknownScancodes == 0)

        // Without the tablet the server falls back to server (relative) mouse mode.
        h.loop.sync { h.inputs?.setTablet(enabled: false) }
        #expect(client.waitForLine(containing: "phase2", timeout: 60) != nil, "\(client.transcript)")
        let expectedMouse: [SpiceMouseEvent] = [.motion(dx: 5, dy: -3, wheel: 0, buttons: []),
                                                .motion(dx: 0, dy: 0, wheel: 0, buttons: [.right]),
                                                .buttons([]), .motion(dx: 0, dy: 0, wheel: 1, buttons: [])]
        #expect(mouse.wait(timeout: 10) { isSubsequence(expectedMouse, of: $0) }, "mouse: \(mouse.all)")
        var serverMode = false
        h.loop.sync { serverMode = h.server.isServerMouseMode }
        #expect(serverMode)
    }
}

/// Not a timed test: run with HOSTVMM_SPICE_BENCH=1 (Benchmarks/spice_display.py).
/// Full 1024x768 frames to one spice-gtk client, the producer paced as QEMU
/// paces its own (a new frame once the worker has fetched the previous one).
/// Pixel (0,0) carries the frame number; the client timestamps the first
/// invalidate showing each number (both sides on CLOCK_MONOTONIC).
@Suite(.serialized) struct SpiceDisplayBenchmark {
    static let enabled = ProcessInfo.processInfo.environment["HOSTVMM_SPICE_BENCH"] != nil

    static func monotonic() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    @Test(.enabled(if: enabled, "set HOSTVMM_SPICE_BENCH=1"))
    func fullFrames1024x768() throws {
        for content in ["desktop", "noise"] {
            let h = try DisplayHarness(width: 1024, height: 768)
            defer { h.stop() }
            var frames: [TestFramebuffer] = []
            var seed: UInt32 = 12345
            for k in 0..<4 {
                let fb = TestFramebuffer(width: 1024, height: 768)
                if content == "noise" {
                    for i in 0..<(1024 * 768) {
                        seed = seed &* 1_664_525 &+ 1_013_904_223
                        fb.pixels[i] = seed >> 8
                    }
                } else {
                    fb.paintQuadrants()
                    fb.fill(SpiceRect(x: 100 + k * 40, y: 100, width: 300, height: 200)) { x, y in UInt32((x * y) & 0xFFFFFF) }
                }
                frames.append(fb)
            }
            let seconds = 6.0
            let client = try WatchedProcess("/usr/bin/python3", [SpiceDisplayTests.client, h.uri, "watch", "\(seconds + 4)"])
            defer { client.signal(SIGTERM); _ = client.waitForExit(timeout: 10) }
            guard client.waitForLine(containing: "primary 1024 768", timeout: 30) != nil else {
                Issue.record("no primary: \(client.transcript)")
                return
            }
            usleep(300_000)
            var sent: [Int: Double] = [:]
            let full = SpiceRect(x: 0, y: 0, width: 1024, height: 768)
            let start = Self.monotonic()
            var n = 0
            var flushTime = 0.0
            while Self.monotonic() - start < seconds {
                n += 1
                let fb = frames[n % frames.count]
                fb[0, 0] = UInt32(n)
                let t0 = Self.monotonic()
                sent[n] = t0
                h.display.flush(damage: [full], from: fb.view)
                flushTime += Self.monotonic() - t0
                while h.display.stats.queued > 0 && Self.monotonic() - start < seconds { usleep(200) }
            }
            _ = client.waitForLine(containing: "frames", timeout: 20)
            var latencies: [Double] = []
            for line in client.output where line.hasPrefix("frame ") {
                let parts = line.split(separator: " ")
                if parts.count == 3, let f = Int(parts[1]), let t = Double(parts[2]), let s = sent[f] { latencies.append(t - s) }
            }
            latencies.sort()
            let seen = latencies.count
            let median = seen > 0 ? latencies[seen / 2] * 1000 : .nan
            let p95 = seen > 0 ? latencies[min(seen - 1, seen * 95 / 100)] * 1000 : .nan
            print(String(format: "spice display bench (%@): produced %d frames (%.1f/s, flush %.2f ms each), client saw %d (%.1f/s), update->client latency median %.1f ms, p95 %.1f ms",
                         content, n, Double(n) / seconds, flushTime / Double(max(n, 1)) * 1000, seen, Double(seen) / seconds, median, p95))
            #expect(seen > 0)
        }
    }
}
