import AgentProtocol
import LinuxSystem
#if canImport(Glibc)
import Glibc
#endif

/// A short-lived connection to the D-Bus system bus for method calls: connect,
/// authenticate (EXTERNAL), Hello, then calls that each wait (bounded) for
/// their reply. Signals and other traffic in between are skipped.
final class SystemBus {
    enum Failure: Error, CustomStringConvertible {
        case noBus(String)
        case protocolError(String)
        case timeout(String)
        /// The bus or the service answered with a D-Bus error.
        case remote(name: String, text: String)

        var description: String {
            switch self {
            case .noBus(let why): return why
            case .protocolError(let why): return "D-Bus protocol error: \(why)"
            case .timeout(let what): return "no answer from the system bus within the time limit (\(what))"
            case .remote(let name, let text): return text.isEmpty ? name : "\(name): \(text)"
            }
        }
    }

    static let defaultSocketPath = "/run/dbus/system_bus_socket"

    /// The unix path a DBUS_SYSTEM_BUS_ADDRESS names, else the standard socket.
    static func socketPath(address: String?) -> String {
        if let path = address?.split(separator: ",").first(where: { $0.hasPrefix("unix:path=") }) {
            return String(path.dropFirst("unix:path=".count))
        }
        return defaultSocketPath
    }

    private let fd: Int32
    private var buffer: [UInt8] = []
    private var serial: UInt32 = 0
    let timeoutMs: Int32

    init(path: String, timeoutMs: Int32 = 5000) throws(Failure) {
        self.timeoutMs = timeoutMs
        do { fd = try UnixSocket.connect(path: path) } catch {
            throw .noBus("no D-Bus system bus at \(path) (\(error))")
        }
        Syscall.setNonBlocking(fd)
        do {
            try authenticate()
            _ = try call(destination: "org.freedesktop.DBus", path: "/org/freedesktop/DBus",
                         interface: "org.freedesktop.DBus", member: "Hello")
        } catch {
            close(fd)
            throw error
        }
    }

    deinit { close(fd) }

    private func send(_ bytes: [UInt8]) throws(Failure) {
        guard Syscall.writeAll(fd: fd, bytes, stallTimeoutMs: timeoutMs) else {
            throw .protocolError("writing to the bus failed: \(FileIO.errnoText())")
        }
    }

    /// Reads more bytes, waiting at most until `deadline`.
    private func readMore(until deadline: Int64, what: String) throws(Failure) {
        while true {
            let left = deadline - Self.nowMs()
            guard left > 0 else { throw .timeout(what) }
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            if Syscall.retrying({ poll(&pfd, 1, Int32(left)) }) < 0 { throw .protocolError("poll: \(FileIO.errnoText())") }
            switch Syscall.readSome(fd: fd) {
            case .data(let bytes):
                buffer += bytes
                return
            case .wouldBlock:
                continue
            case .endOfStream:
                throw .protocolError("the bus closed the connection")
            case .failed:
                throw .protocolError("reading from the bus failed: \(FileIO.errnoText())")
            }
        }
    }

    private static func nowMs() -> Int64 { Int64(EventLoop.now()) }

    private func authenticate() throws(Failure) {
        try send(DBusAuth.start(uid: getuid()))
        let deadline = Self.nowMs() + Int64(timeoutMs)
        var reply = DBusAuth.takeReply(from: &buffer)
        while reply == nil {
            try readMore(until: deadline, what: "authentication")
            reply = DBusAuth.takeReply(from: &buffer)
        }
        if case .rejected(let line)? = reply { throw .protocolError("authentication refused: \(line)") }
        try send(DBusAuth.begin)
    }

    /// Calls a method and returns its reply; a D-Bus error reply is thrown.
    @discardableResult
    func call(destination: String, path: String, interface: String, member: String,
              _ arguments: [DBusValue] = []) throws(Failure) -> DBusMessage
    {
        serial += 1
        let mine = serial
        try send(DBusMessage.methodCall(serial: mine, destination: destination, path: path, interface: interface,
                                        member: member, arguments).encode())
        let deadline = Self.nowMs() + Int64(timeoutMs)
        while true {
            let next: DBusMessage?
            do { next = try DBusMessage.takeNext(from: &buffer) } catch { throw .protocolError("\(error)") }
            guard let message = next else {
                try readMore(until: deadline, what: "\(interface).\(member)")
                continue
            }
            guard message.replySerial == mine else { continue }  // a signal or someone else's traffic
            if message.kind == .error {
                throw .remote(name: message.errorName ?? "unknown error", text: message.body.first?.stringValue ?? "")
            }
            return message
        }
    }

    /// org.freedesktop.DBus.Properties.GetAll: one round trip for all of an
    /// object's properties, unwrapped from their variants.
    func properties(destination: String, path: String, interface: String) throws(Failure) -> [String: DBusValue] {
        let reply = try call(destination: destination, path: path, interface: "org.freedesktop.DBus.Properties",
                             member: "GetAll", [.string(interface)])
        guard case .array(_, let entries)? = reply.body.first else { return [:] }
        var out: [String: DBusValue] = [:]
        for case .dictEntry(let key, .variant(let value)) in entries {
            if let name = key.stringValue { out[name] = value }
        }
        return out
    }
}
