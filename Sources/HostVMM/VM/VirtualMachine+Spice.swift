import AgentProtocol
import Foundation
import LinuxSystem
import SpiceBridge

/// How `hostvmm up` asked for SPICE (`--spice`, `--no-spice`, ticket and TLS options).
public struct SpiceSetup: Sendable {
    public enum Listen: Sendable, Equatable {
        /// TCP; port nil means 5930 or the next free one.
        case tcp(address: String, port: Int?)
        case unix(path: String)
    }

    public var listen: Listen = .tcp(address: "127.0.0.1", port: nil)
    /// nil: generate a ticket and store it 0600 in the state directory.
    public var passwordFile: String?
    public var insecure = false
    public var tlsCert: String?
    public var tlsKey: String?
    public var tlsCA: String?

    public init() {}

    /// Parses `ADDR:PORT`, `:PORT`, `ADDR` or `unix:PATH`.
    public static func parseListen(_ text: String) throws(VMConfigError) -> Listen {
        if text.hasPrefix("unix:") {
            let path = String(text.dropFirst(5))
            guard path.hasPrefix("/") else { throw .outOfRange("--spice unix:PATH needs an absolute path") }
            return .unix(path: path)
        }
        guard let colon = text.lastIndex(of: ":") else { return .tcp(address: text, port: nil) }
        let address = text[..<colon].isEmpty ? "127.0.0.1" : String(text[..<colon])
        guard let port = Int(text[text.index(after: colon)...]), (1...65535).contains(port) else {
            throw .outOfRange("--spice: '\(text)' is not ADDR:PORT (port 1-65535) or unix:PATH")
        }
        return .tcp(address: address, port: port)
    }
}

extension VirtualMachine {
    var spicePasswordFile: String { "\(state.path)/spice.password" }

    /// Starts the SPICE server before QEMU, so a client can connect as soon as hostvmm says so.
    func startSpice(_ setup: SpiceSetup) throws {
        var access = SpiceConfig.Access.insecure
        if !setup.insecure {
            let password: String
            if let file = setup.passwordFile {
                guard let text = FileIO.readText(file)?.trimmingCharacters(in: .whitespacesAndNewlines), !text.isEmpty
                else { throw SpiceError("cannot read a SPICE password from \(file)") }
                password = text
            } else {
                let alphabet = Array("abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789")
                password = String((0..<20).map { _ in alphabet.randomElement()! })
                try FileIO.writeAtomically(spicePasswordFile, Array((password + "\n").utf8), mode: 0o600)
            }
            access = .ticket(password)
        }
        func tlsConfig(port: Int) -> SpiceConfig.TLS? {
            guard let cert = setup.tlsCert, let key = setup.tlsKey else { return nil }
            return SpiceConfig.TLS(port: port + 1, caFile: setup.tlsCA ?? cert, certFile: cert, keyFile: key)
        }
        let server: SpiceServer
        switch setup.listen {
        case .unix(let path):
            server = try SpiceServer(config: SpiceConfig(listen: .unix(path: path), access: access, name: config.name),
                                     loop: loop)
        case .tcp(let address, let port?):
            server = try SpiceServer(config: SpiceConfig(listen: .tcp(address: address, port: port), access: access,
                                                         tls: tlsConfig(port: port), name: config.name), loop: loop)
        case .tcp(let address, nil):
            // 5930 or the next free port; another process may take a port between
            // our check and the server's bind, so a failed start tries the next one.
            var start = 5930
            var made: SpiceServer?
            var lastError: Error?
            for _ in 0..<10 {
                guard let free = SpiceServer.freePort(address: address, from: start) else { break }
                do {
                    made = try SpiceServer(config: SpiceConfig(listen: .tcp(address: address, port: free), access: access,
                                                               tls: tlsConfig(port: free), name: config.name), loop: loop)
                    if free != 5930 { onLog("SPICE port 5930 is taken; using \(free)") }
                    break
                } catch {
                    lastError = error
                    start = free + (setup.tlsCert == nil ? 1 : 2)
                }
            }
            guard let made else {
                throw lastError ?? SpiceError("no free SPICE port from 5930 on \(address)")
            }
            server = made
        }
        server.onClient = { [unowned self] event in
            // CONNECTED arrives before the channel type is known; INITIALIZED is the linked main channel.
            guard event.kind != .connected else { return }
            let name = event.kind == .initialized ? "spice-client-connected" : "spice-client-disconnected"
            self.emit(VMEvent(name: name, data: ["address": .string(event.peer)]))
        }
        server.onAgentNotice = { [unowned self] bytes in self.agentNotice(bytes) }
        server.onLog = { [unowned self] line in self.onLog(line) }
        spice = server
        onLog("SPICE \(SpiceServer.version) listening: \(spiceURI(includePassword: false))"
              + (setup.insecure ? " (no ticket: --spice-insecure)" : "; 'hostvmm spice \(config.name)' prints the URI with its ticket"))
        let library = SpiceLibrary.loaded
        if !library.isFixedBuild {
            onLog("SPICE warning: \(library.path) is Debian's build, in which a client that leaves while its display "
                  + "channel starts crashes hostvmm; scripts/setup.sh builds the fixed one into \(SpiceLibrary.fixedBuildDirectory)")
        }
    }

    /// Events our guest agent may report (HostNotice); anything else it sends is
    /// logged and dropped: the guest is not trusted to name host events.
    static let agentNoticeEvents: Set<String> = ["guest-locked", "guest-lock-failed", "audio-volume"]

    private func agentNotice(_ bytes: [UInt8]) {
        guard case .object(let notice)? = try? JSONParser.parse(bytes),
              let name = notice["event"]?.stringValue, Self.agentNoticeEvents.contains(name)
        else {
            onLog("ignored a malformed notice from the guest agent (\(bytes.count) bytes)")
            return
        }
        var data = notice
        data["event"] = nil
        if name == "audio-volume" {
            guard audioVolumeChanged(data) else {
                onLog("ignored an audio-volume notice without a stream, mute and 1-32 volumes 0-65535")
                return
            }
        }
        emit(VMEvent(name: name, data: data))
    }

    func spiceURI(includePassword: Bool) -> String {
        guard let spice else { return "" }
        var password = ""
        if includePassword, case .ticket(let p) = spice.config.access {
            password = p.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? p
        }
        switch spice.config.listen {
        case .tcp(let address, let port):
            var query = ["port=\(port)"]
            if let tls = spice.config.tls { query.append("tls-port=\(tls.port)") }
            if !password.isEmpty { query.append("password=\(password)") }
            return "spice://\(address)?\(query.joined(separator: "&"))"
        case .unix(let path):
            return "spice+unix://\(path)" + (password.isEmpty ? "" : "?password=\(password)")
        }
    }

    func spiceStatusJSON() -> JSONValue {
        guard let spice else { return .object(["enabled": false]) }
        var info: JSONObject = [
            "enabled": true, "uri": .string(spiceURI(includePassword: true)),
            "ticket": .bool(spice.config.access != .insecure), "agent-attached": .bool(spice.agentAttached),
            "library": .string(SpiceLibrary.loaded.path), "library-fixed": .bool(SpiceLibrary.loaded.isFixedBuild),
        ]
        switch spice.config.listen {
        case .tcp(let address, let port):
            info["host"] = .string(address)
            info["port"] = .int(Int64(port))
        case .unix(let path):
            info["unix"] = .string(path)
        }
        if let tls = spice.config.tls { info["tls-port"] = .int(Int64(tls.port)) }
        if spice.config.access != .insecure, FileIO.exists(spicePasswordFile) {
            info["password-file"] = .string(spicePasswordFile)
        }
        return .object(info)
    }
}
