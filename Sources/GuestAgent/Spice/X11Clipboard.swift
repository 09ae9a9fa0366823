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
        let deadline = Clock.milliseconds() + Int(Self.retryMilliseconds)
        while true {
            for command in takeCommands() {
                if case .requests(let selection, _) = command { currentClient?.deliver(selection, type: .none, data: []) }
            }
            let left = deadline - Clock.milliseconds()
            if left <= 0 { return }
            var pfd = pollfd(fd: wakeRead, events: Int16(POLLIN), revents: 0)
            _ = poll(&pfd, 1, Int32(left))
        }
    }

    var wakeFD: Int32 { wakeRead }
}

enum Clock {
    /// Monotonic milliseconds.
    static func milliseconds() -> Int {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Int(ts.tv_sec) * 1000 + Int(ts.tv_nsec) / 1_000_000
    }
}

/// One open Display and everything that lives on it; used only on the X thread.
private final class X11Connection {
    /// How long a guest program may take to answer a conversion (or between INCR pieces).
    static let conversionTimeoutMs = 10_000
    /// How long the client may take to send the data of a selection it grabbed.
    static let clientTimeoutMs = 30_000
    /// X programs' requests waiting for the client's data, per selection, at most.
    static let maxWaiting = 64

    /// An X program's SelectionRequest we answer later.
    struct XRequest {
        var requestor: Window
        var selection: Atom
        var target: Atom
        var property: Atom
        var time: Time
        var type: VDAgentClipboardType
    }

    /// A conversion we asked a guest owner for, for the client.
    struct Fetch {
        var type: VDAgentClipboardType
        var deadline: Int
        /// INCR in progress: what arrived so far.
        var incr: [UInt8]?
    }

    /// An answer sent with INCR, piece by piece as the requestor deletes the property.
    struct Send {
        var requestor: Window
        var property: Atom
        var type: Atom
        var data: [UInt8]
        var chunks: [Range<Int>]
        var next = 0
        var deadline: Int
    }

    /// A class, so that the many small updates below change it in place (with a
    /// dictionary of structs, the release optimizer spent minutes on them).
    final class SelectionState {
        // The client owns it and we hold the X selection for it.
        var clientTypes: [VDAgentClipboardType]?
        var cache: [VDAgentClipboardType: [UInt8]] = [:]
        var waiting: [XRequest] = []
        var asked: (type: VDAgentClipboardType, deadline: Int)?
        var ownedSince: Time = 0
        // A guest program owns it.
        var owner: Window = 0
        var offered: [VDAgentClipboardType: Atom] = [:]
        var offeredToClient = false
        var clientWants: [VDAgentClipboardType] = []
        var fetch: Fetch?
    }

    nonisolated(unsafe) static var ioErrorHappened = false

    let owner: X11Clipboard
    let display: OpaquePointer
    let window: Window
    let fixesEventBase: Int32
    let chunkSize: Int
    private var atoms: [String: Atom] = [:]
    private var names: [Atom: String] = [:]
    private let clipboardState = SelectionState()
    private let primaryState = SelectionState()
    @inline(never)
    private func state(_ selection: VDAgentSelection) -> SelectionState {
        selection == .primary ? primaryState : clipboardState
    }
    private var bothStates: [(VDAgentSelection, SelectionState)] { [(.clipboard, clipboardState), (.primary, primaryState)] }
    private var sends: [Send] = []

    @inline(never)
    init?(name: String, owner: X11Clipboard) {
        guard let display = XOpenDisplay(name) else { return nil }
        var eventBase: Int32 = 0
        var errorBase: Int32 = 0
        guard XFixesQueryExtension(display, &eventBase, &errorBase) != 0 else {
            Log.info("clipboard: X display '\(name)' has no XFIXES extension; not using it")
            XCloseDisplay(display)
            return nil
        }
        Self.ioErrorHappened = false
        // A failed request (a requestor window gone, say) must not end the agent: Xlib's default handler exits.
        XSetErrorHandler { _, _ in 0 }
        XSetIOErrorHandler { _ in 0 }
        // Returning from the exit handler leaves the Display dead instead of calling exit().
        XSetIOErrorExitHandler(display, { _, _ in X11Connection.ioErrorHappened = true }, nil)
        self.owner = owner
        self.display = display
        fixesEventBase = eventBase
        let root = XDefaultRootWindow(display)
        window = XCreateSimpleWindow(display, root, -10, -10, 1, 1, 0, 0, 0)
        XSelectInput(display, window, CX11_PROPERTY_CHANGE_MASK)
        chunkSize = ClipboardTargets.chunkSize(maxRequestUnits: Int(XMaxRequestSize(display)),
                                               extendedMaxRequestUnits: Int(XExtendedMaxRequestSize(display)))
        for selection in [VDAgentSelection.clipboard, .primary] {
            XFixesSelectSelectionInput(display, window, selectionAtom(selection), CX11_FIXES_SELECTION_MASK)
        }
        // Programs that own a selection already: offer what they have.
        for selection in [VDAgentSelection.clipboard, .primary] {
            let current = XGetSelectionOwner(display, selectionAtom(selection))
            if current != 0 && current != window { ownerChanged(selection, to: current, time: 0) }
        }
        XFlush(display)
    }

    // MARK: Atoms

    func atom(_ name: String) -> Atom {
        if let a = atoms[name] { return a }
        let a = XInternAtom(display, name, 0)
        atoms[name] = a
        names[a] = name
        return a
    }

    func name(_ atom: Atom) -> String? {
        if atom == 0 { return nil }
        if let n = names[atom] { return n }
        guard let raw = XGetAtomName(display, atom) else { return nil }
        let n = String(cString: raw)
        XFree(raw)
        names[atom] = n
        return n
    }

    func selectionAtom(_ selection: VDAgentSelection) -> Atom { atom(selection == .primary ? "PRIMARY" : "CLIPBOARD") }

    func selection(of atom: Atom) -> VDAgentSelection? {
        if atom == selectionAtom(.clipboard) { return .clipboard }
        if atom == selectionAtom(.primary) { return .primary }
        return nil
    }

    /// Our property for a conversion of `selection` (one for TARGETS, one for data).
    func property(_ selection: VDAgentSelection, targets: Bool) -> Atom {
        atom("HOSTVMM_\(targets ? "TARGETS" : "DATA")_\(selection == .primary ? "PRIMARY" : "CLIPBOARD")")
    }

    var client: ClipboardClient? { owner.currentClient }

    // MARK: The loop

    // Handlers stay out of line (@inline(never)), keeping every loop small for the optimizer.
    @inline(never)
    func run() {
        let xfd = XConnectionNumber(display)
        while !Self.ioErrorHappened {
            for command in owner.takeCommands() { handle(command) }
            while !Self.ioErrorHappened && XPending(display) > 0 {
                var event = XEvent()
                XNextEvent(display, &event)
                handle(&event)
            }
            expire()
            XFlush(display)
            if Self.ioErrorHappened { break }
            // A round trip above may have queued events without the fd showing it.
            if XEventsQueued(display, QueuedAlready) > 0 { continue }
            var fds = [pollfd(fd: xfd, events: Int16(POLLIN), revents: 0),
                       pollfd(fd: owner.wakeFD, events: Int16(POLLIN), revents: 0)]
            _ = poll(&fds, 2, nextTimeout())
            if fds[0].revents & Int16(POLLHUP | POLLERR) != 0 && fds[0].revents & Int16(POLLIN) == 0 {
                Self.ioErrorHappened = true
            }
        }
        // The connection is dead: what the client was offered from it is gone.
        for (selection, s) in bothStates where s.offeredToClient { client?.withdraw(selection) }
        for (selection, s) in bothStates where s.fetch != nil || !s.clientWants.isEmpty {
            for _ in 0..<(s.clientWants.count + (s.fetch != nil ? 1 : 0)) { client?.deliver(selection, type: .none, data: []) }
        }
        // The Display is not closed: after an I/O error Xlib may still touch it; one leak per lost server.
    }

    private func nextTimeout() -> Int32 {
        var deadlines: [Int] = sends.map(\.deadline)
        for (_, s) in bothStates {
            if let a = s.asked { deadlines.append(a.deadline) }
            if let f = s.fetch { deadlines.append(f.deadline) }
        }
        guard let first = deadlines.min() else { return -1 }
        return Int32(clamping: max(0, first - Clock.milliseconds()))
    }

    @inline(never)
    private func expire() {
        let now = Clock.milliseconds()
        for (selection, _) in bothStates {
            if let a = state(selection).asked, a.deadline <= now {
                Log.info("clipboard: the client did not send the \(selection) data in time; refusing the paste")
                state(selection).asked = nil
                refuseWaiting(selection, type: a.type)
                askClientForNext(selection)
            }
            if let f = state(selection).fetch, f.deadline <= now {
                Log.info("clipboard: the guest's \(selection) owner did not answer in time")
                finishFetch(selection, data: nil)
            }
        }
        let late = sends.filter { $0.deadline <= now }
        if !late.isEmpty {
            Log.info("clipboard: \(late.count) INCR transfer(s) to X programs stalled; dropped")
            sends.removeAll { $0.deadline <= now }
            for s in late { stopWatching(s.requestor) }
        }
    }

    // MARK: Work from the SPICE side

    @inline(never)
    private func handle(_ command: X11Clipboard.Command) {
        switch command {
        case .grabbed(let selection, let types):
            let carried = types.filter { ClipboardTargets.supported.contains($0) }
            dropClientOwnership(selection)
            state(selection).offered = [:]
            state(selection).offeredToClient = false
            guard !carried.isEmpty else { return }
            let sel = selectionAtom(selection)
            XSetSelectionOwner(display, sel, window, Time(CurrentTime))
            guard XGetSelectionOwner(display, sel) == window else {
                Log.info("clipboard: could not take the X \(selection) selection")
                return
            }
            state(selection).clientTypes = carried
        case .released(let selection):
            guard state(selection).clientTypes != nil else { return }
            dropClientOwnership(selection)
            if XGetSelectionOwner(display, selectionAtom(selection)) == window {
                XSetSelectionOwner(display, selectionAtom(selection), 0, Time(CurrentTime))
            }
        case .left:
            for selection in [VDAgentSelection.clipboard, .primary] where state(selection).clientTypes != nil {
                handle(.released(selection))
            }
            for selection in [VDAgentSelection.clipboard, .primary] { state(selection).clientWants = [] }
        case .data(let selection, let type, let data):
            clientSent(selection, type: type, data: data)
        case .requests(let selection, let type):
            let s = state(selection)
            guard s.clientTypes == nil, s.owner != 0, s.offered[type] != nil else {
                client?.deliver(selection, type: .none, data: [])
                return
            }
            s.clientWants.append(type)
            if s.fetch == nil { startFetch(selection) }
        }
    }

    /// Forget the client's ownership (a new grab, a release, the client gone): refuse what waits.
    @inline(never)
    private func dropClientOwnership(_ selection: VDAgentSelection) {
        let s = state(selection)
        let waiting = s.waiting
        s.waiting = []
        s.asked = nil
        s.cache = [:]
        s.clientTypes = nil
        for r in waiting { refuse(r) }
    }

    @inline(never)
    private func clientSent(_ selection: VDAgentSelection, type: VDAgentClipboardType, data: [UInt8]) {
        let s = state(selection)
        guard let asked = s.asked else { return }
        s.asked = nil
        if type == .none || type != asked.type {
            refuseWaiting(selection, type: asked.type)
        } else {
            s.cache[type] = data
            let ready = s.waiting.filter { $0.type == type }
            s.waiting.removeAll { $0.type == type }
            for r in ready { answer(r, data: data) }
        }
        askClientForNext(selection)
    }

    @inline(never)
    private func refuseWaiting(_ selection: VDAgentSelection, type: VDAgentClipboardType) {
        let refused = state(selection).waiting.filter { $0.type == type }
        state(selection).waiting.removeAll { $0.type == type }
        for r in refused { refuse(r) }
    }

    @inline(never)
    private func askClientForNext(_ selection: VDAgentSelection) {
        guard state(selection).asked == nil, let next = state(selection).waiting.first else { return }
        state(selection).asked = (next.type, Clock.milliseconds() + Self.clientTimeoutMs)
        client?.request(selection, type: next.type)
    }

    // MARK: X events

    @inline(never)
    private func handle(_ event: inout XEvent) {
        let type = event.type
        if type == fixesEventBase + CX11_FIXES_SELECTION_NOTIFY {
            let e = cx11_fixes_selection(&event)!.pointee
            guard let selection = selection(of: e.selection) else { return }
            if e.owner == window && Int32(e.subtype) == CX11_FIXES_SET_OWNER {
                state(selection).ownedSince = e.selection_timestamp
                return
            }
            let gone = Int32(e.subtype) != CX11_FIXES_SET_OWNER || e.owner == 0
            ownerChanged(selection, to: gone ? 0 : e.owner, time: e.selection_timestamp)
        } else if type == CX11_SELECTION_REQUEST {
            let e = cx11_selection_request(&event)!.pointee
            selectionRequested(e)
        } else if type == CX11_SELECTION_CLEAR {
            let e = cx11_selection_clear(&event)!.pointee
            // Stale if we took the selection again since.
            if let selection = selection(of: e.selection), XGetSelectionOwner(display, e.selection) != window {
                dropClientOwnership(selection)
            }
        } else if type == CX11_SELECTION_NOTIFY {
            let e = cx11_selection(&event)!.pointee
            guard e.requestor == window, let selection = selection(of: e.selection) else { return }
            if e.property == 0 {
                // Refused: the property names which conversion it was only when granted, so go by target.
                if e.target == atom("TARGETS") { offer(selection, targets: []) } else { finishFetch(selection, data: nil) }
            } else if e.property == property(selection, targets: true) {
                targetsArrived(selection)
            } else if e.property == property(selection, targets: false) {
                dataArrived(selection)
            }
        } else if type == CX11_PROPERTY_NOTIFY {
            let e = cx11_property(&event)!.pointee
            if e.window == window {
                if Int32(e.state) == CX11_PROPERTY_NEW_VALUE {
                    for selection in [VDAgentSelection.clipboard, .primary]
                    where e.atom == property(selection, targets: false) && state(selection).fetch?.incr != nil {
                        incrPieceArrived(selection)
                    }
                }
            } else if Int32(e.state) == CX11_PROPERTY_DELETE {
                continueSend(requestor: e.window, property: e.atom)
            }
        }
    }

    /// A guest program took `selection` (or, with 0, nobody owns it now).
    @inline(never)
    private func ownerChanged(_ selection: VDAgentSelection, to newOwner: Window, time: Time) {
        // Stale if we took the selection again since.
        if newOwner != 0 && XGetSelectionOwner(display, selectionAtom(selection)) == window { return }
        state(selection).owner = newOwner
        state(selection).offered = [:]
        if newOwner == 0 {
            if state(selection).offeredToClient {
                state(selection).offeredToClient = false
                client?.withdraw(selection)
            }
            return
        }
        // The client's grab of it is over.
        dropClientOwnership(selection)
        XConvertSelection(display, selectionAtom(selection), atom("TARGETS"), property(selection, targets: true), window,
                          time == 0 ? Time(CurrentTime) : time)
    }

    @inline(never)
    private func targetsArrived(_ selection: VDAgentSelection) {
        let p = readProperty(window, property(selection, targets: true))
        let targets: [String] = p?.format == 32 ? p!.longs.compactMap { name(Atom($0)) } : []
        offer(selection, targets: targets)
    }

    @inline(never)
    private func offer(_ selection: VDAgentSelection, targets: [String]) {
        guard state(selection).owner != 0 else { return }
        let offer = ClipboardTargets.offer(fromTargets: targets)
        state(selection).offered = Dictionary(offer.map { ($0.type, atom($0.target)) }, uniquingKeysWith: { a, _ in a })
        if offer.isEmpty {
            if state(selection).offeredToClient { client?.withdraw(selection) }
            state(selection).offeredToClient = false
        } else {
            state(selection).offeredToClient = true
            client?.offer(selection, types: offer.map(\.type))
        }
    }

    @inline(never)
    private func startFetch(_ selection: VDAgentSelection) {
        while let type = state(selection).clientWants.first {
            guard let target = state(selection).offered[type], state(selection).owner != 0 else {
                state(selection).clientWants.removeFirst()
                client?.deliver(selection, type: .none, data: [])
                continue
            }
            state(selection).fetch = Fetch(type: type, deadline: Clock.milliseconds() + Self.conversionTimeoutMs)
            let prop = property(selection, targets: false)
            XDeleteProperty(display, window, prop)
            XConvertSelection(display, selectionAtom(selection), target, prop, window, Time(CurrentTime))
            return
        }
    }

    @inline(never)
    private func dataArrived(_ selection: VDAgentSelection) {
        guard state(selection).fetch != nil else { return }
        let prop = property(selection, targets: false)
        guard let p = readProperty(window, prop) else { return finishFetch(selection, data: nil) }
        if p.type == atom("INCR") {
            // Deleting the property (readProperty did) asks the owner for the first piece.
            let announced = p.longs.first.map { Int($0) } ?? 0
            var buffer: [UInt8] = []
            buffer.reserveCapacity(min(announced, VDAgent.defaultMaxMessageSize))
            state(selection).fetch!.incr = buffer
            state(selection).fetch!.deadline = Clock.milliseconds() + Self.conversionTimeoutMs
        } else {
            finishFetch(selection, data: p.bytes)
        }
    }

    @inline(never)
    private func incrPieceArrived(_ selection: VDAgentSelection) {
        guard let p = readProperty(window, property(selection, targets: false)) else { return finishFetch(selection, data: nil) }
        if p.type == 0 { return }  // already read
        if p.bytes.isEmpty {
            finishFetch(selection, data: state(selection).fetch!.incr)
            return
        }
        state(selection).fetch!.incr! += p.bytes
        state(selection).fetch!.deadline = Clock.milliseconds() + Self.conversionTimeoutMs
        if state(selection).fetch!.incr!.count > VDAgent.defaultMaxMessageSize {
            Log.info("clipboard: the guest's \(selection) data exceeds \(VDAgent.defaultMaxMessageSize) bytes; refused")
            finishFetch(selection, data: nil)
        }
    }

    /// The conversion for the client's first wanted type is over (nil: failed): answer it, start the next.
    @inline(never)
    private func finishFetch(_ selection: VDAgentSelection, data: [UInt8]?) {
        guard let fetch = state(selection).fetch else { return }
        state(selection).fetch = nil
        if !state(selection).clientWants.isEmpty { state(selection).clientWants.removeFirst() }
        if let data {
            client?.deliver(selection, type: fetch.type, data: data)
        } else {
            client?.deliver(selection, type: .none, data: [])
        }
        startFetch(selection)
    }

    // MARK: Answering X programs (we hold the selection for the client)

    @inline(never)
    private func selectionRequested(_ e: XSelectionRequestEvent) {
        let property = e.property == 0 ? e.target : e.property  // obsolete requestors leave it None
        guard let selection = selection(of: e.selection), let types = state(selection).clientTypes,
              let targetName = name(e.target)
        else {
            return notify(e.requestor, e.selection, e.target, 0, e.time)
        }
        switch targetName {
        case "TARGETS":
            let list = ClipboardTargets.targetsList(offering: types).map { Int(bitPattern: atom($0)) }
            change(e.requestor, property, type: atom("ATOM"), longs: list)
            notify(e.requestor, e.selection, e.target, property, e.time)
        case "TIMESTAMP":
            change(e.requestor, property, type: atom("INTEGER"), longs: [Int(state(selection).ownedSince)])
            notify(e.requestor, e.selection, e.target, property, e.time)
        default:
            guard let type = ClipboardTargets.type(forTarget: targetName), types.contains(type) else {
                return notify(e.requestor, e.selection, e.target, 0, e.time)
            }
            let request = XRequest(requestor: e.requestor, selection: e.selection, target: e.target, property: property,
                                   time: e.time, type: type)
            if let data = state(selection).cache[type] { return answer(request, data: data) }
            guard state(selection).waiting.count < Self.maxWaiting else { return refuse(request) }
            state(selection).waiting.append(request)
            askClientForNext(selection)
        }
    }

    private func refuse(_ r: XRequest) { notify(r.requestor, r.selection, r.target, 0, r.time) }

    private func notify(_ requestor: Window, _ selection: Atom, _ target: Atom, _ property: Atom, _ time: Time) {
        _ = cx11_send_selection_notify(display, requestor, selection, target, property, time)
    }

    /// Writes `data` for `r`: in one property, or with INCR when larger than a chunk.
    @inline(never)
    private func answer(_ r: XRequest, data: [UInt8]) {
        // TEXT asks for any text encoding: say which one we wrote.
        let type = name(r.target) == "TEXT" ? atom("UTF8_STRING") : r.target
        guard let chunks = ClipboardTargets.incrChunks(total: data.count, chunkSize: chunkSize) else {
            change(r.requestor, r.property, type: type, bytes: data[...])
            notify(r.requestor, r.selection, r.target, r.property, r.time)
            return
        }
        sends.removeAll { $0.requestor == r.requestor && $0.property == r.property }
        XSelectInput(display, r.requestor, CX11_PROPERTY_CHANGE_MASK)
        change(r.requestor, r.property, type: atom("INCR"), longs: [data.count])
        notify(r.requestor, r.selection, r.target, r.property, r.time)
        sends.append(Send(requestor: r.requestor, property: r.property, type: type, data: data, chunks: chunks,
                          deadline: Clock.milliseconds() + Self.conversionTimeoutMs))
    }

    /// The requestor deleted a property: the next INCR piece, or the final empty one.
    @inline(never)
    private func continueSend(requestor: Window, property: Atom) {
        guard let i = sends.firstIndex(where: { $0.requestor == requestor && $0.property == property }) else { return }
        var s = sends[i]
        guard s.next < s.chunks.count else {
            // Every piece was taken: the zero-length property ends the transfer.
            change(requestor, property, type: s.type, bytes: [][...])
            sends.remove(at: i)
            stopWatching(requestor)
            return
        }
        change(requestor, property, type: s.type, bytes: s.data[s.chunks[s.next]])
        s.next += 1
        s.deadline = Clock.milliseconds() + Self.conversionTimeoutMs
        sends[i] = s
    }

    @inline(never)
    private func stopWatching(_ requestor: Window) {
        if !sends.contains(where: { $0.requestor == requestor }) { XSelectInput(display, requestor, CX11_NO_EVENT_MASK) }
    }

    // MARK: Properties

    private func change(_ w: Window, _ property: Atom, type: Atom, bytes: ArraySlice<UInt8>) {
        // An empty slice may have no storage: Xlib still wants a pointer.
        let piece = bytes.isEmpty ? [0][0..<0] : bytes
        _ = piece.withContiguousStorageIfAvailable { buf in
            XChangeProperty(display, w, property, type, 8, CX11_PROP_MODE_REPLACE, buf.baseAddress!, Int32(buf.count))
        }
    }

    /// Format 32: Xlib takes C longs.
    private func change(_ w: Window, _ property: Atom, type: Atom, longs: [Int]) {
        _ = longs.withUnsafeBytes { raw in
            XChangeProperty(display, w, property, type, 32, CX11_PROP_MODE_REPLACE,
                            raw.baseAddress!.assumingMemoryBound(to: UInt8.self), Int32(longs.count))
        }
    }

    struct Property {
        var type: Atom
        var format: Int32
        /// Format 8 data.
        var bytes: [UInt8]
        /// Format 32 data (Xlib hands them over as C longs).
        var longs: [UInt]
    }

    /// Reads a whole property in pieces, then deletes it; nil if it failed or exceeds the clipboard limit.
    @inline(never)
    private func readProperty(_ w: Window, _ property: Atom) -> Property? {
        var result = Property(type: 0, format: 0, bytes: [], longs: [])
        var offset = 0  // in 32-bit units, as the protocol counts
        let pieceUnits = 1 << 20  // 4 MiB per round trip
        while true {
            var type: Atom = 0
            var format: Int32 = 0
            var items: UInt = 0
            var after: UInt = 0
            var data: UnsafeMutablePointer<UInt8>?
            let r = XGetWindowProperty(display, w, property, offset, pieceUnits, 0, CX11_ANY_PROPERTY_TYPE, &type, &format,
                                       &items, &after, &data)
            guard r == CX11_SUCCESS else { return nil }
            defer { if let data { XFree(data) } }
            result.type = type
            result.format = format
            if type == 0 { break }  // no such property
            let count = Int(items)
            if let data {
                switch format {
                case 8:
                    result.bytes.append(contentsOf: UnsafeBufferPointer(start: data, count: count))
                case 16:
                    data.withMemoryRebound(to: UInt16.self, capacity: count) { p in
                        for i in 0..<count { result.bytes += [UInt8(p[i] & 0xFF), UInt8(p[i] >> 8)] }
                    }
                default:
                    data.withMemoryRebound(to: UInt.self, capacity: count) { p in
                        result.longs.append(contentsOf: UnsafeBufferPointer(start: p, count: count))
                    }
                }
            }
            if after == 0 { break }
            offset += count * Int(format) / 32
            if result.bytes.count + result.longs.count * 4 > VDAgent.defaultMaxMessageSize { return nil }
        }
        XDeleteProperty(display, w, property)
        return result
    }
}
