import AgentProtocol
import CX11
import LinuxSystem
#if canImport(Glibc)
import Glibc
#endif

/// One open Display and everything that lives on it; used only on the X thread.
final class X11Connection {
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

    /// The conversion we asked a guest owner for, for `clientWants.first`, in flight.
    struct Fetch {
        /// What was asked: an answer for another target is a late one, for a fetch
        /// given up on (timeout, client gone), and must not be taken for this one.
        var target: Atom
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
    var atoms: [String: Atom] = [:]
    var names: [Atom: String] = [:]
    let clipboardState = SelectionState()
    let primaryState = SelectionState()
    @inline(never)
    func state(_ selection: VDAgentSelection) -> SelectionState {
        selection == .primary ? primaryState : clipboardState
    }
    var bothStates: [(VDAgentSelection, SelectionState)] { [(.clipboard, clipboardState), (.primary, primaryState)] }
    var sends: [Send] = []

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
            // A program that owns the selection already: offer what it has.
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
        // A fetch in flight is for clientWants.first: one refusal per request.
        for (selection, s) in bothStates {
            for _ in s.clientWants { client?.deliver(selection, type: .none, data: []) }
        }
        // The Display is not closed: after an I/O error Xlib may still touch it; one leak per lost server.
    }

    func nextTimeout() -> Int32 {
        var deadlines: [Int] = sends.map(\.deadline)
        for (_, s) in bothStates {
            if let a = s.asked { deadlines.append(a.deadline) }
            if let f = s.fetch { deadlines.append(f.deadline) }
        }
        guard let first = deadlines.min() else { return -1 }
        return Int32(clamping: max(0, first - Int(EventLoop.now())))
    }

    @inline(never)
    func expire() {
        let now = Int(EventLoop.now())
        for (selection, s) in bothStates {
            if let a = s.asked, a.deadline <= now {
                Log.info("clipboard: the client did not send the \(selection) data in time; refusing the paste")
                s.asked = nil
                refuseWaiting(selection, type: a.type)
                askClientForNext(selection)
            }
            if let f = s.fetch, f.deadline <= now {
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
    func handle(_ command: X11Clipboard.Command) {
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
            for selection in [VDAgentSelection.clipboard, .primary] {
                if state(selection).clientTypes != nil { handle(.released(selection)) }
                // Nothing is owed to the next client; a conversion still in flight answers nobody.
                state(selection).clientWants = []
                state(selection).fetch = nil
            }
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
    func dropClientOwnership(_ selection: VDAgentSelection) {
        let s = state(selection)
        let waiting = s.waiting
        s.waiting = []
        s.asked = nil
        s.cache = [:]
        s.clientTypes = nil
        for r in waiting { refuse(r) }
    }

    @inline(never)
    func clientSent(_ selection: VDAgentSelection, type: VDAgentClipboardType, data: [UInt8]) {
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
    func refuseWaiting(_ selection: VDAgentSelection, type: VDAgentClipboardType) {
        let refused = state(selection).waiting.filter { $0.type == type }
        state(selection).waiting.removeAll { $0.type == type }
        for r in refused { refuse(r) }
    }

    @inline(never)
    func askClientForNext(_ selection: VDAgentSelection) {
        guard state(selection).asked == nil, let next = state(selection).waiting.first else { return }
        state(selection).asked = (next.type, Int(EventLoop.now()) + Self.clientTimeoutMs)
        client?.request(selection, type: next.type)
    }
}
