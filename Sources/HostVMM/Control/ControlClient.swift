import AgentProtocol
import Foundation
import LinuxSystem

/// A blocking client of a running hostvmm's control socket, for the CLI and tests.
public final class ControlClient {
    public enum ClientError: Error, CustomStringConvertible {
        case notRunning(String, String)
        case protocolError(String)
        case closed
        case timeout(Double)
        case command(errorClass: String, desc: String)

        public var description: String {
            switch self {
            case .notRunning(let name, let why): return "VM '\(name)' is not running (\(why)); start it with 'hostvmm up --name \(name)'"
            case .protocolError(let s): return "control protocol error: \(s)"
            case .closed: return "hostvmm closed the control connection"
            case .timeout(let s): return "no answer from hostvmm within \(s) s"
            case .command(let cls, let desc): return "\(desc) [\(cls)]"
            }
        }
    }

    private let fd: Int32
    private var framer = LineFramer()
    private var pendingLines: [[UInt8]] = []
    private var nextID = 1

    /// Connects and negotiates capabilities.
    public init(vmName: String, state: StateDirectory? = nil) throws {
        let dir = state ?? StateDirectory.forVM(vmName)
        do {
            fd = try UnixSocket.connect(path: dir.controlSocket)
        } catch {
            throw ClientError.notRunning(vmName, error.description)
        }
        guard case .object(let greeting) = try readMessage(timeout: 10), greeting["QMP"] != nil else {
            throw ClientError.protocolError("no greeting")
        }
        _ = try execute("qmp_capabilities", timeout: 10)
    }

    deinit { close(fd) }

    /// Runs a command and returns its `return` value; events received meanwhile are dropped.
    public func execute(_ command: String, arguments: JSONObject = [:], timeout: Double = 120) throws -> JSONValue {
        let id = "cli-\(nextID)"
        nextID += 1
        var msg: JSONObject = ["execute": .string(command), "id": .string(id)]
        if !arguments.isEmpty { msg["arguments"] = .object(arguments) }
        var bytes = JSONWriter.encode(.object(msg))
        bytes.append(0x0A)
        guard Syscall.writeAll(fd: fd, bytes) else { throw ClientError.closed }
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let remaining = deadline.timeIntervalSinceNow
            guard remaining > 0 else { throw ClientError.timeout(timeout) }
            guard case .object(let reply) = try readMessage(timeout: remaining) else { continue }
            guard reply["id"]?.stringValue == id else { continue }
            if let ret = reply["return"] { return ret }
            let err = reply["error"]
            throw ClientError.command(errorClass: err?["class"]?.stringValue ?? "GenericError",
                                      desc: err?["desc"]?.stringValue ?? "unknown error")
        }
    }

    /// The next event, or nil when hostvmm closes the connection (the VM ended).
    public func nextEvent(timeout: Double = -1) throws -> JSONObject? {
        while true {
            let message: JSONValue
            do {
                message = try readMessage(timeout: timeout)
            } catch ClientError.closed {
                return nil
            }
            if case .object(let obj) = message, obj["event"] != nil { return obj }
        }
    }

    private func readMessage(timeout: Double) throws -> JSONValue {
        while pendingLines.isEmpty {
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ms = timeout < 0 ? -1 : Int32(min(timeout * 1000, Double(Int32.max)))
            let r = Syscall.retrying { poll(&pfd, 1, ms) }
            if r == 0 { throw ClientError.timeout(timeout) }
            switch Syscall.readSome(fd: fd) {
            case .data(let bytes):
                for output in framer.feed(bytes) {
                    if case .line(let line) = output { pendingLines.append(line) }
                }
            case .wouldBlock: continue
            case .endOfStream, .failed: throw ClientError.closed
            }
        }
        let line = pendingLines.removeFirst()
        do {
            return try JSONParser.parse(line)
        } catch {
            throw ClientError.protocolError("\(error)")
        }
    }
}
