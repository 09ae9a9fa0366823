import AgentProtocol
import LinuxSystem

/// The SPICE agent protocol's state machine for one port session (protocols.md
/// §3.5-3.7), clipboard by demand: capabilities, grab/request/data/release, and
/// the client going away. It sends through `send`; it does no I/O itself.
final class SpiceAgentSession: @unchecked Sendable {
    /// What we announce: on-demand clipboard with selections, LF line ends,
    /// MAX_CLIPBOARD, and re-grab without release.
    static let capabilities: VDAgentCapabilities = [
        .clipboardByDemand, .clipboardSelection, .guestLineEndLF, .maxClipboard, .clipboardNoReleaseOnRegrab,
    ]

    private let monitor = Monitor()
    private let send: @Sendable ([UInt8]) -> Void
    let store: ClipboardStore
    private var peer: VDAgentCapabilities = []
    private var maxClipboard = VDAgent.defaultMaxMessageSize
    /// Fired when the SPICE client goes away (lock-on-disconnect hangs here).
    var onClientDisconnected: () -> Void = {}

    init(store: ClipboardStore, send: @escaping @Sendable ([UInt8]) -> Void) {
        self.store = store
        self.send = send
    }

    /// The port opened: ask the client for its capabilities.
    func start() {
        write(.announceCapabilities(request: true, Self.capabilities), port: .client)
    }

    /// A prefix or serial is on the wire only when both sides announced it:
    /// spice-gtk decides by the agent's capabilities, spice-vdagentd by the
    /// client's, so the intersection is what both agree on.
    private var negotiated: VDAgentCapabilities { monitor.withLock { peer.intersection(Self.capabilities) } }

    private func write(_ message: VDAgentMessage, port: VDAgentPort) {
        let payload = VDAgentCodec.encode(message, peer: negotiated)
        // The agent may write one chunk of any size (protocols.md §0 finding 5).
        send(VDAgentWriter.chunks(VDAgentWriter.message(message.type, payload), port: port))
    }

    /// A local program set a selection: offer it to the client.
    func grab(_ selection: VDAgentSelection) {
        let byDemand = monitor.withLock { peer.contains(.clipboardByDemand) }
        guard byDemand, let entry = store.get(selection) else { return }
        write(.clipboardGrab(selection, serial: nil, types: [entry.type]), port: .client)
    }

    func handle(_ output: VDAgentReader.Output) {
        switch output {
        case .dropped(let error):
            Log.info("SPICE agent: dropped a message: \(error)")
        case .message(let port, let type, let payload):
            let caps = negotiated
            do {
                try handle(try VDAgentCodec.decode(type, payload[...], peer: type == .announceCapabilities ? [] : caps),
                           port: port)
            } catch {
                Log.info("SPICE agent: dropped \(type): \(error)")
            }
        }
    }

    private func handle(_ message: VDAgentMessage, port: VDAgentPort) throws {
        switch message {
        case .announceCapabilities(let request, let caps):
            monitor.withLock { peer = caps }
            if request {
                // A (new) client asked: the previous one is gone.
                store.clientLeft()
                write(.announceCapabilities(request: false, Self.capabilities), port: .client)
            }
        case .clipboardGrab(let selection, _, let types):
            // The client owns the selection; a headless guest takes the data at once.
            let wanted = types.contains(.utf8Text) ? VDAgentClipboardType.utf8Text : types.first
            if let wanted { write(.clipboardRequest(selection, wanted), port: .client) }
        case .clipboard(let selection, let type, let data):
            guard type != .none else { return }
            guard data.count <= monitor.withLock({ maxClipboard }) else {
                Log.info("SPICE agent: clipboard data of \(data.count) bytes over the limit; dropped")
                return
            }
            store.set(selection, type: type, data: data, owner: .client)
        case .clipboardRequest(let selection, let type):
            if let entry = store.get(selection), entry.owner == .guest, entry.type == type {
                write(.clipboard(selection, type, entry.data), port: .client)
            } else {
                write(.clipboard(selection, .none, []), port: .client)
            }
        case .clipboardRelease:
            break  // the client no longer offers it; what it pasted stays
        case .clientDisconnected:
            store.clientLeft()
            onClientDisconnected()
        case .maxClipboard(let max):
            monitor.withLock { maxClipboard = max < 0 ? Int.max : Int(max) }
        case .monitorsConfig:
            // No display to configure in a headless guest; acknowledge on the port it came on.
            write(.reply(type: VDAgentMessageType.monitorsConfig.rawValue, error: 1), port: port)
        case .reply, .mouseState, .other:
            break
        }
    }
}
