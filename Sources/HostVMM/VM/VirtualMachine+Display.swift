import AgentProtocol
import Foundation
import LinuxSystem
import SpiceBridge
import VirtioCore
import VirtioGPU
import ThreadSandbox

/// The virtio-gpu of `--display` and where its frames go.
///
/// Threads: `device` and `backend` live on the device thread, which calls the
/// sink methods; the frame and cursor calls go straight to SpiceDisplay (they
/// only queue, under its locks). A new scanout size goes to the VM's loop,
/// where SPICE's primary surface is remade, and then back for a full frame.
/// `console`, `resizesSignalled` and `preferredSize` belong to the VM's loop.
final class GPUDisplay: VirtioGPUDisplaySink {
    let device: VirtioGPUDevice
    let backend: VhostUserBackend
    let socketPath: String
    /// nil with --no-spice: the guest still gets its GPU, nobody sees it.
    let spice: SpiceDisplay?
    /// How a client's window size reaches the running guest (nil: QEMU has no D-Bus display).
    var console: QEMUDisplayConsole?
    /// Sizes QEMU passed on to the guest (`hostvmm display` shows it).
    var resizesSignalled = 0
    /// The size a client asked for; the device's own copy answers the guest.
    var preferredSize = VirtioGPUDevice.defaultSize
    private let vmLoop: EventLoop
    private let deviceLoop: EventLoop
    var log: (String) -> Void = { _ in }

    init(device: VirtioGPUDevice, backend: VhostUserBackend, socketPath: String, spice: SpiceDisplay?,
         vmLoop: EventLoop, deviceLoop: EventLoop)
    {
        self.device = device
        self.backend = backend
        self.socketPath = socketPath
        self.spice = spice
        self.vmLoop = vmLoop
        self.deviceLoop = deviceLoop
    }

    // Device thread.

    func scanoutChanged(width: Int, height: Int) {
        // 0 x 0 (scanout disabled): keep the last picture, as QEMU's displays do.
        guard let spice, width > 0, height > 0 else { return }
        // SPICE's surface is remade on its loop; frames flushed meanwhile are clipped to
        // the old size, so the device presents the whole new scanout once it is done.
        vmLoop.hop { [weak self] in
            guard let self else { return }
            do {
                try spice.resize(width: width, height: height)
            } catch {
                self.log("display: cannot resize the SPICE primary to \(width)x\(height): \(error)")
            }
            self.deviceLoop.hop { [weak self] in self?.device.presentScanout() }
        }
    }

    func scanoutUpdated(damage: [GPURect], pixels: UnsafeRawPointer, width: Int, height: Int, stride: Int) {
        spice?.flush(damage: damage.map { SpiceRect(x: Int($0.x), y: Int($0.y), width: Int($0.width), height: Int($0.height)) },
                     from: SpiceFramebuffer(pixels: pixels, width: width, height: height, stride: stride))
    }

    func cursorDefined(width: Int, height: Int, hotX: Int, hotY: Int, argb: [UInt32], x: Int, y: Int) {
        spice?.setCursor(width: width, height: height, hotX: hotX, hotY: hotY, argb: argb, x: x, y: y)
    }

    func cursorMoved(x: Int, y: Int) { spice?.moveCursor(x: x, y: y) }
    func cursorHidden() { spice?.hideCursor() }
}

/// `--display` (issue #7): a virtio-gpu 2D device served by hostvmm over
/// vhost-user (QEMU's `vhost-user-gpu-pci` connects to `gpu.sock` in the state
/// directory) whose scanout becomes the SPICE server's primary surface.
extension VirtualMachine {
    /// Listens on the GPU socket; after startSpice, before QEMU starts (it connects at once).
    func startDisplay() throws {
        var spiceDisplay: SpiceDisplay?
        if let spice {
            let (w, h) = VirtioGPUDevice.defaultSize
            // Before the display: adding it starts spice-server's worker thread.
            SpiceDisplay.workerSandbox = config.sandbox ? ThreadSandbox.spiceWorker : nil
            let made = try SpiceDisplay(server: spice, width: w, height: h)
            // A client's window size: what GET_DISPLAY_INFO and the EDID report from now
            // on; QEMU's D-Bus console then makes the guest ask (QEMUDisplayConsole).
            made.onClientMonitorsConfig = { [unowned self] monitors in
                guard let display = self.display, let m = monitors.first, m.width >= 320, m.height >= 200,
                    m.width <= 8192, m.height <= 8192
                else { return }
                let size = (width: Int(m.width), height: Int(m.height))
                guard size != display.preferredSize else { return }  // spice-gtk repeats itself
                display.preferredSize = size
                let device = display.device
                self.onDevices { device.preferredSize = size }
                if let console = display.console, console.isOpen {
                    self.onLog("display: client asks for \(size.width)x\(size.height); telling the guest")
                    console.setSize(width: size.width, height: size.height)
                } else {
                    self.onLog("display: client asks for \(size.width)x\(size.height) (the guest sees it at its next display probe)")
                }
            }
            spiceDisplay = made
        }
        let vmLoop = loop
        let deviceLoop = devices?.loop ?? loop
        let path = state.gpuSocket
        display = try setUpOnDevices { [unowned self] in
            let device = VirtioGPUDevice()
            let backend = self.makeBackend(name: "gpu", device: device, brokenEvent: "display-broken")
            device.onLog = self.deviceLog
            let gpu = GPUDisplay(device: device, backend: backend, socketPath: path, spice: spiceDisplay,
                                 vmLoop: vmLoop, deviceLoop: deviceLoop)
            gpu.log = { line in self.onLog(line) }  // called on the VM's loop
            device.sink = gpu
            try backend.listen(path: path)
            return gpu
        }
    }

    /// Once QMP is up (`--display` with QEMU's D-Bus display): hands QEMU one end of
    /// a socketpair as a D-Bus display client and keeps the other (QEMUDisplayConsole).
    func connectDisplayConsole(_ qmp: QMPClient) {
        guard config.displayConsole, let display, display.console?.isOpen != true else { return }
        var pair: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair) == 0 else {
            onLog("display: socketpair: \(FileIO.errnoText()); window sizes reach the guest at its next display probe")
            return
        }
        let console: QEMUDisplayConsole
        do { console = try QEMUDisplayConsole(fd: pair[0], loop: loop) } catch {
            close(pair[0])
            close(pair[1])
            onLog("display: \(error)")
            return
        }
        console.onLog = { [unowned self] line in self.onLog(line) }
        console.onApplied = { [unowned self] width, height in
            self.display?.resizesSignalled += 1
            self.emit(VMEvent(name: "display-resize-signalled",
                              data: ["width": .int(Int64(width)), "height": .int(Int64(height))]))
        }
        display.console = console
        let name = "hostvmm-display"
        qmp.passDescriptor(pair[1], name: name) { [unowned self, weak qmp] result in
            guard case .success = result, let qmp else {
                console.close()
                if case .failure(let error) = result { self.onLog("display: QMP getfd: \(error)") }
                return
            }
            qmp.execute("add_client", arguments: ["protocol": "@dbus-display", "fdname": .string(name)]) { result in
                if case .failure(let error) = result {
                    self.onLog("display: QMP add_client @dbus-display: \(error)")
                    console.close()
                }
            }
        }
        close(pair[1])  // QEMU has its own copy once getfd's message is sent (or none if it failed)
        // A size asked for before QEMU was there.
        let size = display.preferredSize
        if size != VirtioGPUDevice.defaultSize { console.setSize(width: size.width, height: size.height) }
    }

    /// `display-debug-corrupt` (HOSTVMM_TEST_HOOKS=1 only): the next `count` transfers and
    /// flushes the guest sends are made hostile (bad resource id, rectangle or offset).
    func displayDebugCorrupt(_ args: JSONObject, _ done: @escaping (Result<JSONValue, ControlError>) -> Void) {
        guard Self.testHooksEnabled else { return done(.failure(.commandNotFound("display-debug-corrupt"))) }
        guard let display else { return done(.failure(.generic("this VM has no display (it was started with --no-display)"))) }
        let count = max(0, min(Int(args["count"]?.int64Value ?? 1), 1000))
        let device = display.device
        onDevices({ device.corruptNextRequests = count; return count }) { armed in
            done(.success(.object(["armed": .int(Int64(armed))])))
        }
    }

    /// `query-display`: the device's figures read on the device thread, the rest here.
    func displayStatus(_ done: @escaping (JSONValue) -> Void) {
        guard let display else { return done(.object(["enabled": .bool(false)])) }
        let device = display.device, backend = display.backend
        onDevices({ (device.stats, backend.isConnected, backend.brokenReason) }) { [weak display] figures in
            guard let display else { return done(.object(["enabled": .bool(false)])) }
            done(Self.displayStatusJSON(display, stats: figures.0, connected: figures.1, broken: figures.2))
        }
    }

    static func displayStatusJSON(_ display: GPUDisplay, stats s: VirtioGPUDevice.Stats, connected: Bool, broken: String?)
        -> JSONValue
    {
        var info: JSONObject = [
            "enabled": .bool(true),
            "connected": .bool(connected),
            "scanout": .object(["width": .int(Int64(s.scanoutWidth)), "height": .int(Int64(s.scanoutHeight))]),
            "preferred": .object(["width": .int(Int64(display.preferredSize.width)),
                                  "height": .int(Int64(display.preferredSize.height))]),
            "commands": .int(Int64(s.commands)),
            "errors": .int(Int64(s.errors)),
            "transfers": .int(Int64(s.transfers)),
            "bytes-transferred": .int(Int64(s.bytesTransferred)),
            "flushes": .int(Int64(s.flushes)),
            "presented-bytes": .int(Int64(s.presentedBytes)),
            "cursor-commands": .int(Int64(s.cursorCommands)),
            "resources": .int(Int64(s.resources)),
            "resource-bytes": .int(Int64(s.hostBytes)),
        ]
        if let e = s.lastError { info["last-error"] = .string(e) }
        if let reason = broken { info["broken"] = .string(reason) }
        info["live-resize"] = .bool(display.console?.isOpen == true)
        info["resizes-signalled"] = .int(Int64(display.resizesSignalled))
        if let spice = display.spice {
            let d = spice.stats
            info["spice"] = .object(["width": .int(Int64(spice.width)), "height": .int(Int64(spice.height)),
                                     "drawables": .int(Int64(d.drawables)), "fetched": .int(Int64(d.fetched))])
        }
        return .object(info)
    }
}
