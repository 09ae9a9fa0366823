import AgentProtocol
import LinuxSystem

/// The SPICE side as a clipboard backend sees it (SpiceAgentSession). Every
/// method only queues bytes for the port; callable from any thread.
protocol ClipboardClient: AnyObject, Sendable {
    /// A guest program owns `selection` and can supply `types`: offer them (GRAB).
    func offer(_ selection: VDAgentSelection, types: [VDAgentClipboardType])
    /// The guest owner of `selection` is gone (RELEASE).
    func withdraw(_ selection: VDAgentSelection)
    /// Ask the client for the data of a selection it grabbed (REQUEST).
    func request(_ selection: VDAgentSelection, type: VDAgentClipboardType)
    /// Answer a request of the client (CLIPBOARD; type `.none` refuses it).
    func deliver(_ selection: VDAgentSelection, type: VDAgentClipboardType, data: [UInt8])
}

/// Where the guest's clipboard lives: the headless store, or an X display.
/// The session calls these from the port's thread; a backend must not block
/// in them for long (the X11 backend only queues work for its own thread).
protocol ClipboardBackend: AnyObject, Sendable {
    /// The session to talk to, or nil while there is none.
    func attach(_ client: ClipboardClient?)
    /// The client owns `selection` and offers `types`.
    func clientGrabbed(_ selection: VDAgentSelection, types: [VDAgentClipboardType])
    /// The client no longer offers `selection`.
    func clientReleased(_ selection: VDAgentSelection)
    /// The data we requested (type `.none`: the client could not supply it).
    func clientData(_ selection: VDAgentSelection, type: VDAgentClipboardType, data: [UInt8])
    /// The client wants the guest's data; answer with `ClipboardClient.deliver`.
    func clientRequests(_ selection: VDAgentSelection, type: VDAgentClipboardType)
    /// The client is gone (or a new one replaced it): drop what it offered.
    func clientLeft()
}

/// The headless clipboard (ClipboardStore), for guests without a display:
/// the client's data is fetched as soon as it grabs, and `guest-agent
/// clipboard set` offers the guest's.
final class HeadlessClipboard: ClipboardBackend, @unchecked Sendable {
    let store: ClipboardStore
    private let monitor = Monitor()
    private weak var client: ClipboardClient?
    /// Whether local changes are offered to the client (false while another backend is in charge).
    var offersLocalChanges = true

    init(store: ClipboardStore) {
        self.store = store
        store.onLocalSet = { [weak self] selection in
            guard let self, self.monitor.withLock({ self.offersLocalChanges }),
                  let entry = store.get(selection) else { return }
            self.monitor.withLock { self.client }?.offer(selection, types: [entry.type])
        }
    }

    func setOffersLocalChanges(_ on: Bool) { monitor.withLock { offersLocalChanges = on } }

    func attach(_ client: ClipboardClient?) { monitor.withLock { self.client = client } }

    func clientGrabbed(_ selection: VDAgentSelection, types: [VDAgentClipboardType]) {
        // A headless guest takes the data at once, text if offered.
        let wanted = types.contains(.utf8Text) ? VDAgentClipboardType.utf8Text : types.first
        if let wanted { monitor.withLock { client }?.request(selection, type: wanted) }
    }

    func clientReleased(_ selection: VDAgentSelection) {
        // The client no longer offers it; what it pasted stays.
    }

    func clientData(_ selection: VDAgentSelection, type: VDAgentClipboardType, data: [UInt8]) {
        guard type != .none else { return }
        store.set(selection, type: type, data: data, owner: .client)
    }

    func clientRequests(_ selection: VDAgentSelection, type: VDAgentClipboardType) {
        let client = monitor.withLock { self.client }
        if let entry = store.get(selection), entry.owner == .guest, entry.type == type {
            client?.deliver(selection, type: type, data: entry.data)
        } else {
            client?.deliver(selection, type: .none, data: [])
        }
    }

    func clientLeft() { store.clientLeft() }
}

/// X11 while its display is open, the headless clipboard otherwise (before
/// the X server is up, or after it went away).
final class DisplayClipboard: ClipboardBackend, @unchecked Sendable {
    let headless: HeadlessClipboard
    let x11: X11Clipboard

    init(headless: HeadlessClipboard, x11: X11Clipboard) {
        self.headless = headless
        self.x11 = x11
        x11.onConnectionChange = { [weak headless] connected in headless?.setOffersLocalChanges(!connected) }
    }

    private var active: ClipboardBackend { x11.isConnected ? x11 : headless }

    func attach(_ client: ClipboardClient?) {
        headless.attach(client)
        x11.attach(client)
    }

    func clientGrabbed(_ selection: VDAgentSelection, types: [VDAgentClipboardType]) {
        active.clientGrabbed(selection, types: types)
    }

    func clientReleased(_ selection: VDAgentSelection) { active.clientReleased(selection) }

    func clientData(_ selection: VDAgentSelection, type: VDAgentClipboardType, data: [UInt8]) {
        active.clientData(selection, type: type, data: data)
    }

    func clientRequests(_ selection: VDAgentSelection, type: VDAgentClipboardType) {
        active.clientRequests(selection, type: type)
    }

    func clientLeft() {
        headless.clientLeft()
        x11.clientLeft()
    }
}
