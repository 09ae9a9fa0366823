import CSpiceServer
import LinuxSystem
#if canImport(Glibc)
import Glibc
#endif

/// Where the SPICE server listens and who may connect.
public struct SpiceConfig: Sendable {
    public enum Listen: Sendable, Equatable {
        case tcp(address: String, port: Int)
        case unix(path: String)
    }

    public enum Access: Sendable, Equatable {
        /// Clients must present this ticket (the default).
        case ticket(String)
        /// No ticket: only with --spice-insecure.
        case insecure
    }

    public struct TLS: Sendable, Equatable {
        public var port: Int
        public var caFile: String
        public var certFile: String
        public var keyFile: String
        public init(port: Int, caFile: String, certFile: String, keyFile: String) {
            self.port = port
            self.caFile = caFile
            self.certFile = certFile
            self.keyFile = keyFile
        }
    }

    public var listen: Listen
    public var access: Access
    public var tls: TLS?
    public var name: String

    public init(listen: Listen, access: Access, tls: TLS? = nil, name: String) {
        self.listen = listen
        self.access = access
        self.tls = tls
        self.name = name
    }
}

public struct SpiceError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ d: String) { description = d }
}

/// libspice-server embedded in hostvmm (spice.md §1): one server per process,
/// on the process's event loop. Must be created and used on the loop thread.
public final class SpiceServer {
    let server: OpaquePointer
    /// Display and input devices registered with this server. The server keeps
    /// pointers to their C instances until spice_server_destroy, so they are
    /// released only after it (deinit's body runs before stored properties go).
    var devices: [AnyObject] = []
    public let config: SpiceConfig
    private var agentDevice: VDAgentCharDevice?
    private var running = false

    /// Client connections and departures (main channel only), on the loop thread.
    public var onClient: (SpiceChannelEvent) -> Void = { _ in }
    /// Every channel's connections and departures (SpiceAudio watches its record channel).
    var onChannel: [(SpiceChannelEvent) -> Void] = []
    /// A notice from our guest agent (HostNotice: a JSON object's bytes, untrusted).
    public var onAgentNotice: ([UInt8]) -> Void = { _ in }
    /// One line about something the bridge did on its own (e.g. dropped guest data).
    public var onLog: (String) -> Void = { _ in }

    public static var version: String {
        let v = SPICE_SERVER_VERSION
        return "\(v >> 16).\(v >> 8 & 0xFF).\(v & 0xFF)"
    }

    public init(config: SpiceConfig, loop: EventLoop) throws(SpiceError) {
        // A client that goes away mid-write must not kill hostvmm (spice.md §9.14).
        signal(SIGPIPE, SIG_IGN)
        guard let s = spice_server_new() else { throw SpiceError("spice_server_new failed") }
        server = s
        self.config = config
        SpiceCore.loop = loop
        switch config.listen {
        case .tcp(let address, let port):
            spice_server_set_addr(s, address, 0)
            guard spice_server_set_port(s, Int32(port)) == 0 else { throw SpiceError("invalid SPICE port \(port)") }
        case .unix(let path):
            spice_server_set_addr(s, path, SPICE_ADDR_FLAG_UNIX_ONLY)
        }
        if let tls = config.tls {
            guard spice_server_set_tls(s, Int32(tls.port), tls.caFile, tls.certFile, tls.keyFile, nil, nil, nil) == 0 else {
                throw SpiceError("SPICE TLS setup failed (port \(tls.port), certificate \(tls.certFile), key \(tls.keyFile))")
            }
        }
        switch config.access {
        case .ticket(let password):
            guard spice_server_set_ticket(s, password, 0, 0, 0) == 0 else {
                throw SpiceError("the SPICE password must be 1 to 60 characters")
            }
        case .insecure:
            spice_server_set_noauth(s)
        }
        spice_server_set_name(s, config.name)
        spice_server_set_agent_copypaste(s, 1)
        // Lossless display, as QEMU's default (streaming-video=off): with FILTER the
        // server turns regions it thinks are video into lossy MJPEG streams.
        spice_server_set_streaming_video(s, Int32(SPICE_STREAM_VIDEO_OFF))
        SpiceCore.onChannelEvent = { [weak self] event in
            guard let self else { return }
            for watcher in self.onChannel { watcher(event) }
            if event.isMainChannel { self.onClient(event) }
        }
        guard spice_server_init(s, SpiceCore.interface) == 0 else {
            throw SpiceError("the SPICE server could not open its sockets (\(config.listen))")
        }
    }

    /// Guest running or stopped: without vm_start there is no char-device I/O (spice.md §9.6).
    public func setRunning(_ running: Bool) {
        guard running != self.running else { return }
        self.running = running
        if running { spice_server_vm_start(server) } else { spice_server_vm_stop(server) }
    }

    /// The guest opened the SPICE agent port: attach the vdagent char device,
    /// joined to `fd` (the chardev socket of com.redhat.spice.0).
    public func attachAgent(fd: Int32, loop: EventLoop) {
        detachAgent()
        let device = VDAgentCharDevice(fd: fd, loop: loop)
        device.onNotice = { [weak self] notice in self?.onAgentNotice(notice) }
        device.onDropped = { [weak self] why in self?.onLog("dropped from the guest's agent stream: \(why)") }
        agentDevice = device
        device.register(with: server)
    }

    /// The guest closed the port (or the chardev went away).
    public func detachAgent() {
        agentDevice?.unregister()
        agentDevice = nil
    }

    public var agentAttached: Bool { agentDevice != nil }

    /// The usbredir channels, in channel-id order.
    public private(set) var usbRedirChannels: [USBRedirCharDevice] = []

    /// Adds a SPICE usbredir channel (the next channel id) joined to the QEMU
    /// `usb-redir` chardev socket at `qemuSocket` (QEMU listens on it).
    public func addUSBRedirChannel(qemuSocket: String, loop: EventLoop) -> USBRedirCharDevice {
        let device = USBRedirCharDevice(channelID: usbRedirChannels.count, qemuSocket: qemuSocket, loop: loop)
        device.onLog = { [weak self] line in self?.onLog(line) }
        usbRedirChannels.append(device)
        device.register(with: server)
        return device
    }

    /// Agent mouse (on by default, as in QEMU): while a vdagent is attached, client-mode
    /// pointer positions go to the guest agent as VD_AGENT_MOUSE_STATE instead of the
    /// tablet (spice.md §5.4). hostvmm's guest agent does not inject pointer events, so
    /// a VM with a SpiceInputs tablet should turn it off.
    public func setAgentMouse(_ on: Bool) {
        spice_server_set_agent_mouse(server, on ? 1 : 0)
    }

    /// Whether the server is in server (relative) mouse mode rather than client (absolute) mode.
    public var isServerMouseMode: Bool { spice_server_is_server_mouse(server) != 0 }

    deinit {
        detachAgent()
        for device in usbRedirChannels { device.unregister() }
        spice_server_vm_stop(server)
        spice_server_destroy(server)
    }

    /// The first free TCP port from `start` on `address` (5930 is SPICE's usual first port).
    public static func freePort(address: String, from start: Int = 5930, count: Int = 100) -> Int? {
        for port in start..<(start + count) where portIsFree(address: address, port: port) { return port }
        return nil
    }

    static func portIsFree(address: String, port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = UInt16(port).bigEndian
        guard inet_pton(AF_INET, address, &addr.sin_addr) == 1 else { return false }
        return withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }
}
