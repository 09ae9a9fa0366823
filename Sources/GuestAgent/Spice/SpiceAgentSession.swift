import AgentProtocol
import LinuxSystem

/// The SPICE agent protocol's state machine for one port session (protocols.md
/// §3.5-3.7), clipboard by demand: capabilities, grab/request/data/release, and
/// the client going away. It sends through `send`; it does no I/O itself.
final class SpiceAgentSession: @unchecked Sendable {
    /// What we announce: on-demand clipboard with selections, LF line ends,
    /// MAX_CLIPBOARD, re-grab without release, and the client's audio volume.
    static let capabilities: VDAgentCapabilities = [
        .clipboardByDemand, .clipboardSelection, .guestLineEndLF, .maxClipboard, .clipboardNoReleaseOnRegrab,
        .audioVolumeSync,
    ]

    private let monitor = Monitor()
    private let send: @Sendable ([UInt8]) -> Void
    let clipboard: ClipboardBackend
    private var peer: VDAgentCapabilities = []
    private var maxClipboard = VDAgent.defaultMaxMessageSize
    /// Fired when the SPICE client goes away (lock-on-disconnect hangs here).
    var onClientDisconnected: () -> Void = {}
    /// Fired when a (new) client announces itself (cancels a pending lock).
    var onClientConnected: () -> Void = {}

    init(clipboard: ClipboardBackend, send: @escaping @Sendable ([UInt8]) -> Void) {
        self.clipboard = clipboard
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

    private var byDemand: Bool { monitor.withLock { peer.contains(.clipboardByDemand) } }

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
                onClientConnected()
                // A (new) client asked: the previous one is gone.
                clipboard.clientLeft()
                write(.announceCapabilities(request: false, Self.capabilities), port: .client)
            }
        case .clipboardGrab(let selection, _, let types):
            clipboard.clientGrabbed(selection, types: types)
        case .clipboard(let selection, let type, let data):
            guard data.count <= monitor.withLock({ maxClipboard }) else {
                Log.info("SPICE agent: clipboard data of \(data.count) bytes over the limit; dropped")
                clipboard.clientData(selection, type: .none, data: [])
                return
            }
            clipboard.clientData(selection, type: type, data: data)
        case .clipboardRequest(let selection, let type):
            clipboard.clientRequests(selection, type: type)
        case .clipboardRelease(let selection):
            clipboard.clientReleased(selection)
        case .clientDisconnected:
            clipboard.clientLeft()
            onClientDisconnected()
        case .maxClipboard(let max):
            monitor.withLock { maxClipboard = max < 0 ? Int.max : Int(max) }
        case .monitorsConfig:
            // No display to configure in a headless guest; acknowledge on the port it came on.
            write(.reply(type: VDAgentMessageType.monitorsConfig.rawValue, error: 1), port: port)
        case .other(.audioVolumeSync, let payload):
            audioVolume(payload)
        case .reply, .mouseState, .other:
            break
        }
    }
}

extension SpiceAgentSession {
    /// The client's volume and mute. hostvmm's sound card has no mixer controls, so
    /// the agent passes them to hostvmm (a notice, protocol.md §1.9), which applies
    /// them to the guest's sound as spice-vdagent would to the guest's mixer.
    private func audioVolume(_ payload: [UInt8]) {
        guard let volume = VDAgentAudioVolume(payload: payload) else {
            Log.info("SPICE agent: dropped a malformed AUDIO_VOLUME_SYNC (\(payload.count) bytes)")
            return
        }
        let notice: JSONObject = [
            "event": "audio-volume", "stream": .string(volume.isPlayback ? "playback" : "capture"),
            "mute": .bool(volume.mute), "volume": .array(volume.volumes.map { .int(Int64($0)) }),
        ]
        send(HostNotice.encode(json: JSONWriter.encode(.object(notice))))
    }
}

extension SpiceAgentSession: ClipboardClient {
    func offer(_ selection: VDAgentSelection, types: [VDAgentClipboardType]) {
        guard byDemand, !types.isEmpty else { return }
        write(.clipboardGrab(selection, serial: nil, types: types), port: .client)
    }

    func withdraw(_ selection: VDAgentSelection) {
        guard byDemand else { return }
        write(.clipboardRelease(selection), port: .client)
    }

    func request(_ selection: VDAgentSelection, type: VDAgentClipboardType) {
        write(.clipboardRequest(selection, type), port: .client)
    }

    func deliver(_ selection: VDAgentSelection, type: VDAgentClipboardType, data: [UInt8]) {
        guard data.count <= monitor.withLock({ maxClipboard }) else {
            Log.info("SPICE agent: guest clipboard of \(data.count) bytes is over the client's limit; refused")
            write(.clipboard(selection, .none, []), port: .client)
            return
        }
        write(.clipboard(selection, type, data), port: .client)
    }
}
