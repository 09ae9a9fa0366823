import AgentProtocol
import Foundation
import LinuxSystem
import SpiceBridge
import ThreadSandbox

/// Supervises one VM: QEMU child, QMP, the agent channel, the SPICE agent
/// channel's socket and the control API, all on one event loop.
///
/// Lifecycle: `start()` -> starting -> running (QMP says so) ->
/// stopping (shutdown or quit asked) -> stopped (QEMU exited; `onStopped` fires).
public final class VirtualMachine {
    public enum Phase: String, Sendable {
        case starting, running, paused, stopping, stopped
    }

    public let config: VMConfig
    public let state: StateDirectory
    let loop: EventLoop
    let agent: AgentClient
    var phase = Phase.starting
    private(set) var qmp: QMPClient?
    private(set) var qemu: QEMUProcess?
    /// The guest's RAM, which hostvmm creates and QEMU inherits (GuestRAM).
    private(set) var guestRAM: GuestRAM?
    /// The vmcore being written, if any (VirtualMachine+VMCore).
    var vmcoreDump: VMCoreDump?
    private var listeners: [Listener] = []
    private var spiceAgentFD: Int32?
    private var spiceAgentWatch: WatchHandle?
    private(set) var launchTime = EventLoop.now()
    private(set) var agentReadySeconds: Double?
    var shutdownWaiters: [ShutdownWaiter] = []
    private var killTimer: TimerHandle?
    let control: ControlServer
    private(set) var panics: PanicHandler!
    /// Set when the VM ends for a reason that makes the run a failure even if
    /// QEMU exits cleanly (a panic with --on-panic poweroff).
    var exitReason: String?
    /// Why hostvmm's own seccomp filter could not be installed (status shows it).
    var sandboxFailure: ThreadSandbox.Failure?
    /// Why the device thread's filter could not be installed.
    var deviceSandboxFailure: ThreadSandbox.Failure?
    /// The thread the vhost-user device backends run on (VirtualMachine+Devices).
    var devices: LoopThread?
    /// The last balloon target set through hostvmm.
    var balloonTarget: Int64?
    /// The embedded SPICE server (nil with --no-spice).
    var spice: SpiceServer?
    private var spiceAgentPortOpen = false
    /// The virtio-input devices (--inputs), by name ("keyboard", "tablet", "mouse").
    var inputs: [String: InputDevice] = [:]
    /// The virtio-gpu and its SPICE display (--display).
    var display: GPUDisplay?
    /// The virtio-snd and where its sound goes (--audio).
    var audio: VMAudio?
    /// SPICE's inputs channel, when both SPICE and the virtio inputs are on.
    var spiceInputs: SpiceInputs?
    /// SPICE usbredir channels (--usb-redir) and host devices attached (hostvmm usb attach).
    var usbRedirChannels: [USBRedirChannelState] = []
    var usbHostAttachments: [USBHostAttachment] = []
    /// The person's disks this VM holds (HostClaim), released when QEMU exits.
    var diskClaims: [HostClaim] = []

    /// Progress lines for a person (foreground `up` prints them).
    public var onLog: (String) -> Void = { _ in }
    /// Every event, as also sent to control clients.
    public var onEvent: (VMEvent) -> Void = { _ in }
    /// QEMU is gone; hostvmm should exit with a status derived from this.
    public var onStopped: (ExitStatus) -> Void = { _ in }

    public init(config: VMConfig, state: StateDirectory, loop: EventLoop) {
        self.config = config
        self.state = state
        self.loop = loop
        self.agent = AgentClient(loop: loop)
        self.control = ControlServer(loop: loop)
        control.vm = self
        panics = PanicHandler(vm: self, settings: config.panic)
        agent.onReady = { [unowned self] in self.agentBecameReady() }
        agent.onUnready = { [unowned self] reason in self.emit(VMEvent(name: "agent-lost", data: ["reason": .string(reason)])) }
    }

    public var qemuPID: Int32? { qemu?.pid }
    public var agentReady: Bool { agent.isReady }

    /// Opens the sockets, then starts QEMU. Throws if anything could not be set up.
    public func start() throws {
        try state.create()
        if FileManager.default.fileExists(atPath: state.controlSocket),
            (try? UnixSocket.connect(path: state.controlSocket)).map({ close($0); return true }) == true
        {
            throw VMError.alreadyRunning(config.name, state.path)
        }
        // A burst of clients queues in the backlog (twice the session bound) instead of being
        // refused by the kernel (EAGAIN for a non-blocking connect); past 64 sessions they get
        // hostvmm's own error (faults.py's 100 clients at once found the backlog of 8).
        listeners.append(try Listener(path: state.controlSocket, loop: loop, backlog: Int32(2 * ControlServer.maxSessions)) {
            [unowned self] fd in self.control.accept(fd: fd)
        })
        listeners.append(try Listener(path: state.qmpSocket, loop: loop) { [unowned self] fd in self.qmpConnected(fd) })
        listeners.append(try Listener(path: state.agentSocket, loop: loop) { [unowned self] fd in
            do { try self.agent.attach(fd: fd) } catch { self.onLog("agent channel: \(error)") }
        })
        listeners.append(try Listener(path: state.spiceAgentSocket, loop: loop) { [unowned self] fd in
            self.spiceAgentConnected(fd)
        })

        if let setup = config.spice { try startSpice(setup) }
        try startDeviceThread()
        if config.inputs { try startInputs() }
        if config.display { try startDisplay() }
        if config.audio.device { try startAudio() }
        startUSBRedir()
        if config.inputs && config.spice != nil { connectSpiceInputs() }
        onLog("accelerator: \(config.accelerator.kind.rawValue) (\(config.accelerator.reason))")
        onLog("network: " + config.network.summary)
        let logFD = try state.openLog(state.qemuLog)
        defer { close(logFD) }
        if let consoleFD = try? state.openLog(state.consoleLog) { close(consoleFD) }  // 0600 before QEMU opens it
        if let disk = config.rootDisk {
            try DiskOverlay.create(base: disk, at: state.diskOverlay)
            onLog("root disk: \(state.diskOverlay), a copy-on-write overlay of \(disk)")
        }
        try prepareDisks()
        let ram = try GuestRAM(bytes: config.memoryBytes, vmName: config.name)
        guestRAM = ram
        launchTime = EventLoop.now()
        let args = QEMUCommandLine.arguments(config: config, state: state, guestRAMFD: GuestRAM.childFD)
        qemu = try QEMUProcess(arguments: args, logFD: logFD, inherit: [ram.fd], loop: loop) { [unowned self] status in
            self.qemuExited(status)
        }
        onLog("QEMU started (pid \(qemu!.pid)); console: \(state.consoleLog)")
        emit(VMEvent(name: "qemu-started", data: ["pid": .int(Int64(qemu!.pid))]))
        // Every program hostvmm runs has run: from here on it may start none. The process
        // filter first: the kernel syncs it to every thread only while no thread has one of
        // its own. The device thread's goes on top, milliseconds after QEMU starts, long
        // before the guest's drivers reach the devices.
        if config.sandbox {
            sandboxProcess()
            sandboxDeviceThread()
        }
    }

    var secondsSinceLaunch: Double { Double(EventLoop.now() - launchTime) / 1000 }

    func emit(_ event: VMEvent) {
        onEvent(event)
        control.broadcast(event)
    }

    // MARK: - QMP

    private func qmpConnected(_ fd: Int32) {
        qmp?.close()
        do {
            let client = try QMPClient(fd: fd, loop: loop)
            client.onReady = { [unowned self, unowned client] in self.qmpReady(client) }
            client.onEvent = { [unowned self] event in self.qmpEvent(event) }
            client.onProtocolError = { [unowned self] message in self.onLog("QMP: \(message)") }
            qmp = client
        } catch {
            onLog("QMP connection: \(error)")
        }
    }

    private func qmpReady(_ client: QMPClient) {
        connectDisplayConsole(client)
        client.execute("query-status") { [weak self] result in
            guard let self, case .success(let status) = result else { return }
            if status["running"]?.boolValue == true, self.phase == .starting { self.phase = .running }
            self.spice?.setRunning(status["running"]?.boolValue == true)
        }
        // The guest may already have the agent port open (QMP reconnect).
        client.execute("query-chardev") { [weak self] result in
            guard let self, case .success(.array(let devices)) = result else { return }
            for dev in devices where dev["frontend-open"]?.boolValue == true {
                switch dev["label"]?.stringValue {
                case "qga0": self.agent.guestPort(open: true)
                case "vdagent0": self.spiceAgentPort(open: true)
                default: break
                }
            }
        }
    }

    private func qmpEvent(_ event: QMPEvent) {
        _ = panics.handle(event)
        switch event.name {
        case "VSERPORT_CHANGE":
            if event.data["id"]?.stringValue == QEMUCommandLine.agentPortID, let open = event.data["open"]?.boolValue {
                agent.guestPort(open: open)
                if !open { resolveShutdownWaiters(on: .agentPortClosed) }
            }
            if event.data["id"]?.stringValue == QEMUCommandLine.spiceAgentPortID, let open = event.data["open"]?.boolValue {
                spiceAgentPort(open: open)
            }
        case "STOP":
            if phase == .running { phase = .paused }
            spice?.setRunning(false)
        case "RESUME":
            if phase == .paused || phase == .starting { phase = .running }
            spice?.setRunning(true)
        case "SHUTDOWN":
            resolveShutdownWaiters(on: .shutdownEvent)
        case "RESET":
            resolveShutdownWaiters(on: .resetEvent)
        default:
            break
        }
        emit(VMEvent.fromQMP(event))
    }

    // MARK: - Agent

    private func agentBecameReady() {
        let seconds = secondsSinceLaunch
        if agentReadySeconds == nil { agentReadySeconds = seconds }
        onLog(String(format: "agent ready after %.1f s", seconds))
        emit(VMEvent(name: "agent-ready", data: ["seconds-since-launch": .double((seconds * 10).rounded() / 10)]))
    }

    /// The SPICE agent port's chardev socket. With SPICE, the vdagent char
    /// device is joined to it while the guest has the port open (spice.md §9.10);
    /// without SPICE, hostvmm holds it and discards what the guest writes.
    private func spiceAgentConnected(_ fd: Int32) {
        if let w = spiceAgentWatch { loop.remove(w) }
        spiceAgentWatch = nil
        spice?.detachAgent()
        if let old = spiceAgentFD { close(old) }
        spiceAgentFD = fd
        Syscall.setNonBlocking(fd)
        if spice != nil {
            if spiceAgentPortOpen { spice?.attachAgent(fd: fd, loop: loop) }
            return
        }
        spiceAgentWatch = try? loop.watch(fd: fd, events: .read) { [unowned self] _ in
            switch Syscall.readSome(fd: fd) {
            case .data, .wouldBlock: break
            case .endOfStream, .failed:
                if let w = self.spiceAgentWatch { self.loop.remove(w) }
                self.spiceAgentWatch = nil
                close(fd)
                self.spiceAgentFD = nil
            }
        }
    }

    /// The guest opened or closed com.redhat.spice.0.
    func spiceAgentPort(open: Bool) {
        guard open != spiceAgentPortOpen else { return }
        spiceAgentPortOpen = open
        guard let spice else { return }
        if open, let fd = spiceAgentFD {
            spice.attachAgent(fd: fd, loop: loop)
            emit(VMEvent(name: "spice-agent-connected"))
        } else if !open {
            spice.detachAgent()
            emit(VMEvent(name: "spice-agent-disconnected"))
        }
    }

    // MARK: - Stopping

    /// Force stop: QMP `quit`, then SIGTERM, then SIGKILL if QEMU lingers.
    public func forceStop() {
        guard let qemu, qemu.isRunning else { return }
        phase = .stopping
        if let qmp, qmp.isReady {
            qmp.execute("quit")
        } else {
            qemu.signal(SIGTERM)
        }
        if killTimer == nil {
            killTimer = loop.schedule(afterMilliseconds: 5000) { [weak self] in
                self?.onLog("QEMU did not exit within 5 s; killing it")
                self?.qemu?.signal(SIGKILL)
            }
        }
    }

    private func qemuExited(_ status: ExitStatus) {
        phase = .stopped
        loop.cancel(killTimer)
        resolveShutdownWaiters(on: .qemuExited)
        let clean = status.isSuccess && exitReason == nil
        let message = status.isSuccess ? "QEMU exited cleanly" : "QEMU \(status)"
        onLog(message + (status.isSuccess ? "" : "; see \(state.qemuLog)") + (exitReason.map { " (\($0))" } ?? ""))
        var data: JSONObject = ["clean": .bool(clean), "status": .string(status.description)]
        if let exitReason { data["reason"] = .string(exitReason) }
        switch status {
        case .exited(let code): data["exit-code"] = .int(Int64(code))
        case .signaled(let sig): data["signal"] = .int(Int64(sig))
        }
        emit(VMEvent(name: "qemu-exited", data: data))
        qmp?.close()
        stopDevices()
        stopUSBHost()
        usbRedirChannels = []
        spice = nil
        // The overlay holds everything the guest wrote, usually on a tmpfs: gone with the VM.
        if config.rootDisk != nil { unlink(state.diskOverlay) }
        // QEMU's own listening sockets: it unlinks them when it exits, not when it is killed.
        for channel in 0..<config.usb.redirChannels { unlink(state.usbRedirSocket(channel)) }
        releaseDisks()
        for l in listeners { l.close() }
        listeners = []
        control.closeAll()
        onStopped(clean ? status : (status.isSuccess ? .exited(1) : status))
    }
}

public enum VMError: Error, CustomStringConvertible {
    case alreadyRunning(String, String)

    public var description: String {
        switch self {
        case .alreadyRunning(let name, let dir):
            return "VM '\(name)' is already running (control socket in \(dir)); stop it with 'hostvmm down \(name)'"
        }
    }
}
