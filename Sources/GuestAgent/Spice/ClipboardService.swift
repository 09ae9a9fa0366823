import AgentProtocol
import LinuxSystem
#if canImport(Glibc)
import Glibc
#endif

/// `guest-agent clipboard get|set`: scripts in a guest without a display reach
/// the headless clipboard through a unix socket in the state directory (0600:
/// root only, like the agent). One request per connection:
///   "GET <selection>\n"            -> "OK <type> <length>\n" + bytes | "EMPTY\n"
///   "SET <selection> <length>\n" + bytes -> "OK\n" | "ERROR <text>\n"
enum ClipboardService {
    static let maxBytes = VDAgent.defaultMaxMessageSize

    static func socketPath(stateDir: String) -> String { "\(stateDir)/guest-agent-clipboard.sock" }

    static func selection(_ name: String) -> VDAgentSelection? {
        switch name {
        case "clipboard": return .clipboard
        case "primary": return .primary
        default: return nil
        }
    }

    /// Serves requests on its own thread.
    static func start(stateDir: String, store: ClipboardStore) {
        let path = socketPath(stateDir: stateDir)
        let listener: Int32
        do { listener = try UnixSocket.listen(path: path) } catch {
            Log.info("clipboard service: \(error)")
            return
        }
        Threads.detach {
            while true {
                guard let client = try? UnixSocket.accept(listener) else { continue }
                serve(client, store: store)
                close(client)
            }
        }
    }

    private static func readLine(_ fd: Int32) -> String? {
        var line: [UInt8] = []
        var byte: UInt8 = 0
        while line.count < 256 {
            guard Syscall.retrying({ read(fd, &byte, 1) }) == 1 else { return nil }
            if byte == 0x0A { return String(decoding: line, as: UTF8.self) }
            line.append(byte)
        }
        return nil
    }

    private static func readExactly(_ fd: Int32, _ count: Int) -> [UInt8]? {
        var out = [UInt8](repeating: 0, count: count)
        var got = 0
        while got < count {
            let n = out.withUnsafeMutableBytes { raw in Syscall.retrying { read(fd, raw.baseAddress! + got, count - got) } }
            if n <= 0 { return nil }
            got += n
        }
        return out
    }

    private static func serve(_ fd: Int32, store: ClipboardStore) {
        guard let header = readLine(fd) else { return }
        let words = header.split(separator: " ").map(String.init)
        func reply(_ text: String) { _ = Syscall.writeAll(fd: fd, Array(text.utf8)) }
        guard words.count >= 2, let sel = selection(words[1]) else { return reply("ERROR bad request\n") }
        switch words[0] {
        case "GET":
            guard let entry = store.get(sel) else { return reply("EMPTY\n") }
            reply("OK \(entry.type.rawValue) \(entry.data.count)\n")
            _ = Syscall.writeAll(fd: fd, entry.data)
        case "SET":
            guard words.count == 3, let length = Int(words[2]), (0...maxBytes).contains(length) else {
                return reply("ERROR length must be 0 to \(maxBytes)\n")
            }
            guard let data = readExactly(fd, length) else { return reply("ERROR short data\n") }
            store.set(sel, type: .utf8Text, data: data, owner: .guest)
            reply("OK\n")
        default:
            reply("ERROR bad request\n")
        }
    }

    /// The client side, for `guest-agent clipboard get|set [--selection S] [-t DIR]`.
    static func runClient(_ args: [String]) -> Int32 {
        var stateDir = AgentConfig.defaultStateDir
        var selectionName = "clipboard"
        var verb: String?
        var i = 0
        while i < args.count {
            switch args[i] {
            case "--selection", "-s":
                i += 1
                selectionName = i < args.count ? args[i] : ""
            case "--statedir", "-t":
                i += 1
                stateDir = i < args.count ? args[i] : ""
            case "get", "set":
                verb = args[i]
            default:
                return usageError("unknown argument '\(args[i])'")
            }
            i += 1
        }
        guard let verb else { return usageError("expected get or set") }
        guard selection(selectionName) != nil else { return usageError("selection must be clipboard or primary") }
        let fd: Int32
        do { fd = try UnixSocket.connect(path: socketPath(stateDir: stateDir)) } catch {
            Log.info("clipboard: the agent is not running (\(error))")
            return 1
        }
        defer { close(fd) }
        if verb == "set" {
            var data: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = chunk.withUnsafeMutableBytes { raw in Syscall.retrying { read(0, raw.baseAddress, raw.count) } }
                if n <= 0 { break }
                data += chunk[0..<n]
                if data.count > maxBytes { return usageError("more than \(maxBytes) bytes") }
            }
            _ = Syscall.writeAll(fd: fd, Array("SET \(selectionName) \(data.count)\n".utf8) + data)
            let answer = readLine(fd) ?? "ERROR no answer"
            if answer != "OK" { Log.info("clipboard: \(answer)") }
            return answer == "OK" ? 0 : 1
        }
        _ = Syscall.writeAll(fd: fd, Array("GET \(selectionName)\n".utf8))
        guard let answer = readLine(fd) else { return 1 }
        if answer == "EMPTY" { return 2 }
        let words = answer.split(separator: " ")
        guard words.count == 3, words[0] == "OK", let length = Int(words[2]), let data = readExactly(fd, length) else {
            Log.info("clipboard: \(answer)")
            return 1
        }
        _ = Syscall.writeAll(fd: 1, data)
        return 0
    }

    private static func usageError(_ text: String) -> Int32 {
        Log.info("clipboard: \(text)\nusage: guest-agent clipboard get|set [--selection clipboard|primary] [--statedir DIR]")
        return 1
    }
}
