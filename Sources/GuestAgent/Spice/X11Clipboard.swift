import AgentProtocol
import CX11
import LinuxSystem
#if canImport(Glibc)
import Glibc
#endif

/// The guest's X11 clipboard (CLIPBOARD and PRIMARY; UTF-8 text and PNG),
/// through libX11 and XFixes.
///
/// One thread owns the Display connection and every Xlib call (so Xlib needs
/// no locking): it polls the X connection together with a pipe on which the
/// SPICE side posts work. While the display cannot be opened it retries every
/// few seconds; `DisplayClipboard` uses the headless clipboard meanwhile.
///
/// - Client grabs: we take the X selection with our window and answer X
///   programs' SelectionRequests: TARGETS and TIMESTAMP ourselves, data by
///   asking the client (REQUEST) and answering every queued request when it
///   arrives, with INCR (ICCCM §2.7.2) above `chunkSize`.
/// - A guest program takes a selection (XFixesSelectionNotify): we ask it
///   for TARGETS and offer the matching types to the client (GRAB); the
///   client's REQUEST becomes an XConvertSelection (INCR received too).
final class X11Clipboard: ClipboardBackend, @unchecked Sendable {
    enum Command {
        case grabbed(VDAgentSelection, [VDAgentClipboardType])
        case released(VDAgentSelection)
        case data(VDAgentSelection, VDAgentClipboardType, [UInt8])
        case requests(VDAgentSelection, VDAgentClipboardType)
        case left
    }

    let displayName: String
    /// Called on the X thread when the display opens (true) or is lost (false).
    var onConnectionChange: (Bool) -> Void = { _ in }
    /// How often an unopened display is tried again.
    static let retryMilliseconds: Int32 = 3000

    private let monitor = Monitor()
    private var commands: [Command] = []
    private weak var client: ClipboardClient?
    private var connected = false
    private let wakeRead: Int32
    private let wakeWrite: Int32

    init(displayName: String) {
        self.displayName = displayName
        var fds: [Int32] = [-1, -1]
        precondition(pipe(&fds) == 0, "pipe: \(FileIO.errnoText())")
        for fd in fds {
            Syscall.setNonBlocking(fd)
            Syscall.setCloseOnExec(fd)
        }
        wakeRead = fds[0]
        wakeWrite = fds[1]
    }

    var isConnected: Bool { monitor.withLock { connected } }
    var currentClient: ClipboardClient? { monitor.withLock { client } }

    func start() { Threads.detach { [self] in self.run() } }

    // MARK: - ClipboardBackend (any thread): queue the work for the X thread

    func attach(_ client: ClipboardClient?) { monitor.withLock { self.client = client } }

    // CLIPBOARD and PRIMARY only, like spice-vdagent (protocols.md §3.7 item 5).
    func clientGrabbed(_ selection: VDAgentSelection, types: [VDAgentClipboardType]) {
        if selection != .secondary { post(.grabbed(selection, types)) }
    }
    func clientReleased(_ selection: VDAgentSelection) {
        if selection != .secondary { post(.released(selection)) }
    }
    func clientData(_ selection: VDAgentSelection, type: VDAgentClipboardType, data: [UInt8]) {
        if selection != .secondary { post(.data(selection, type, data)) }
    }
    func clientRequests(_ selection: VDAgentSelection, type: VDAgentClipboardType) {
        if selection == .secondary { return currentClient?.deliver(selection, type: .none, data: []) ?? () }
        post(.requests(selection, type))
    }
    func clientLeft() { post(.left) }

    private func post(_ command: Command) {
        monitor.withLock { commands.append(command) }
        var byte: UInt8 = 1
        _ = write(wakeWrite, &byte, 1)
    }

    /// The queued work, emptying the wake pipe.
    func takeCommands() -> [Command] {
        var sink = [UInt8](repeating: 0, count: 256)
        while read(wakeRead, &sink, sink.count) > 0 {}
        return monitor.withLock {
            defer { commands.removeAll() }
            return commands
        }
    }

    // MARK: - The X thread

    private func setConnected(_ on: Bool) {
        monitor.withLock { connected = on }
        onConnectionChange(on)
    }

    // Not optimized: with the connection's code inlined into this retry loop,
    // the release optimizer (loop-invariant code motion) ran for tens of minutes.
    @_optimize(none)
    private func run() {
        var announced = false
        while true {
            guard let connection = X11Connection(name: displayName, owner: self) else {
                if !announced {
                    Log.info("clipboard: cannot open X display '\(displayName)'; using the headless clipboard, "
                             + "trying again every \(Self.retryMilliseconds / 1000) s")
                    announced = true
                }
                waitWithoutDisplay()
                continue
            }
            Log.info("clipboard: using X display '\(displayName)' (CLIPBOARD and PRIMARY)")
            setConnected(true)
            connection.run()
            setConnected(false)
            Log.info("clipboard: lost X display '\(displayName)'; using the headless clipboard until it returns")
            announced = true
        }
    }

    /// Until the next attempt: refuse what was posted (the session routed it
    /// here just before the display went away).
    private func waitWithoutDisplay() {
        let deadline = Int(EventLoop.now()) + Int(Self.retryMilliseconds)
        while true {
            for command in takeCommands() {
                if case .requests(let selection, _) = command { currentClient?.deliver(selection, type: .none, data: []) }
            }
            let left = deadline - Int(EventLoop.now())
            if left <= 0 { return }
            var pfd = pollfd(fd: wakeRead, events: Int16(POLLIN), revents: 0)
            _ = poll(&pfd, 1, Int32(left))
        }
    }

    var wakeFD: Int32 { wakeRead }
}
