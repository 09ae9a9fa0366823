import LinuxSystem
#if canImport(Glibc)
import Glibc
#endif

/// Configuration, spelled like qemu-ga's so that units, udev rules, config
/// files and habits written for qemu-ga work unchanged. Command-line options
/// override the config file (`-c PATH`, else `$QGA_CONF`, else
/// /etc/qemu/qemu-ga.conf when it exists), whose `[general]` keys are qemu-ga's.
struct AgentConfig: Equatable {
    enum Method: String {
        case virtioSerial = "virtio-serial"
        case unixListen = "unix-listen"
    }

    static let defaultVirtioPath = "/dev/virtio-ports/org.qemu.guest_agent.0"
    static let defaultConfigPath = "/etc/qemu/qemu-ga.conf"
    static let defaultFreezeHook = "/etc/qemu/fsfreeze-hook"
    static let defaultStateDir = "/run"

    var method: Method = .virtioSerial
    var path: String? = nil
    var verbose = false
    var stateDir = defaultStateDir
    var freezeHook: String? = nil
    var allowRPCs: [String]? = nil
    var blockRPCs: [String] = []
    var logFile: String? = nil
    var pidFile: String? = nil
    /// The SPICE agent port (virtio-serial only, unless given). Our extension.
    var spicePath: String? = nil
    var spiceAgent = true
    /// Lock the user sessions when the SPICE client goes away (our extension,
    /// protocol.md §1.9), unless a client is back within `lockGraceSeconds`.
    var lockOnDisconnect = true
    var lockGraceSeconds = defaultLockGrace
    static let defaultLockGrace = 5
    /// The D-Bus system bus socket (DBUS_SYSTEM_BUS_ADDRESS or the standard path).
    var systemBusPath = SystemBus.defaultSocketPath
    /// The X display whose clipboard the SPICE agent serves ($DISPLAY unless
    /// given); nil or empty: the headless clipboard. Our extension.
    var x11Display: String? = nil

    static let defaultSpicePath = "/dev/virtio-ports/com.redhat.spice.0"

    /// Where the SPICE agent runs: the default port with virtio-serial, else only when given.
    var effectiveSpicePath: String? {
        guard spiceAgent else { return nil }
        return spicePath ?? (method == .virtioSerial ? Self.defaultSpicePath : nil)
    }

    var channelPath: String { path ?? Self.defaultVirtioPath }

    /// Whether `command` may run under allow-rpcs/block-rpcs. qemu-ga 10
    /// applies both when both are given: the allow list first, then the block list.
    func permits(_ command: String) -> Bool {
        if let allowRPCs, !allowRPCs.contains(command) { return false }
        return !blockRPCs.contains(command)
    }

    /// The configuration as a qemu-ga config file (`--dump-conf`). Lists use
    /// ';', the separator qemu-ga's key-file reader splits on.
    func dump() -> String {
        var lines = ["[general]", "daemon=false", "method=\(method.rawValue)", "path=\(channelPath)"]
        if let logFile { lines.append("logfile=\(logFile)") }
        if let pidFile { lines.append("pidfile=\(pidFile)") }
        if let freezeHook { lines.append("fsfreeze-hook=\(freezeHook)") }
        lines += [
            "statedir=\(stateDir)", "verbose=\(verbose)", "retry-path=false",
            "block-rpcs=\(blockRPCs.joined(separator: ";"))",
            "allow-rpcs=\((allowRPCs ?? []).joined(separator: ";"))",
            "lock-on-disconnect=\(lockOnDisconnect)", "lock-grace=\(lockGraceSeconds)",
            "x11-display=\(x11Display ?? "")",
        ]
        return lines.joined(separator: "\n") + "\n"
    }
}

/// Parses the command line (getopt_long style, like qemu-ga) and the config file.
enum AgentCommandLine {
    enum Result {
        case run(AgentConfig)
        case exit(code: Int32, message: String)
    }

    static let usage = """
        Usage: guest-agent [-m METHOD -p PATH] [OPTIONS]
               guest-agent clipboard get|set [--selection clipboard|primary]
        A guest agent that speaks the qemu-guest-agent protocol (and, with the same
        options, can replace qemu-ga).

          -c, --config=PATH     configuration file (default \(AgentConfig.defaultConfigPath)
                                if it exists, or $QGA_CONF)
          -m, --method=METHOD   transport: virtio-serial (default) or unix-listen
          -p, --path=PATH       device or socket path
                                (default for virtio-serial: \(AgentConfig.defaultVirtioPath))
          -t, --statedir=DIR    where file-handle and freeze state live (default \(AgentConfig.defaultStateDir))
          -F, --fsfreeze-hook[=PATH]
                                run a hook with 'freeze'/'thaw' around fsfreeze
                                (default hook \(AgentConfig.defaultFreezeHook))
          -a, --allow-rpcs=LIST enable only these commands (comma-separated; 'help' lists them)
          -b, --block-rpcs=LIST disable these commands (comma-separated; 'help' lists them)
          -l, --logfile=PATH    log to PATH instead of stderr
          -f, --pidfile=PATH    write the process id to PATH
          -D, --dump-conf       print the effective configuration as a config file and exit
          -v, --verbose         log every request
          -V, --version         print the version and exit
          -h, --help            print this help and exit
          --spice-path=PATH     the SPICE agent port or device (default with virtio-serial:
                                \(AgentConfig.defaultSpicePath))
          --no-spice-agent      do not serve the SPICE agent protocol
          --no-lock-on-disconnect
                                do not lock the user sessions when the SPICE client
                                disconnects (by default they are locked through logind)
          --lock-grace=SECONDS  a client back within this time prevents that lock
                                (default \(AgentConfig.defaultLockGrace); config keys:
                                lock-on-disconnect=true|false, lock-grace=SECONDS)
          --x11-display=DISPLAY the X display whose clipboard (CLIPBOARD, PRIMARY) the SPICE
                                agent shares (default $DISPLAY; empty: the headless clipboard,
                                `guest-agent clipboard`); until it opens, headless, retried every 3 s
          -d, --daemonize, -r, --retry-path
                                accepted for qemu-ga compatibility; the agent never
                                daemonizes (systemd runs it) and always retries its path

        """

    private struct Option {
        var short: Character
        var long: String
        var argument: Argument
        enum Argument { case none, required, optional }
    }

    private static let options: [Option] = [
        .init(short: "c", long: "config", argument: .required), .init(short: "m", long: "method", argument: .required),
        .init(short: "p", long: "path", argument: .required), .init(short: "t", long: "statedir", argument: .required),
        .init(short: "F", long: "fsfreeze-hook", argument: .optional),
        .init(short: "a", long: "allow-rpcs", argument: .required),
        .init(short: "b", long: "block-rpcs", argument: .required), .init(short: "l", long: "logfile", argument: .required),
        .init(short: "f", long: "pidfile", argument: .required), .init(short: "D", long: "dump-conf", argument: .none),
        .init(short: "v", long: "verbose", argument: .none), .init(short: "V", long: "version", argument: .none),
        .init(short: "h", long: "help", argument: .none), .init(short: "d", long: "daemonize", argument: .none),
        .init(short: "r", long: "retry-path", argument: .none),
        .init(short: "S", long: "spice-path", argument: .required),
        .init(short: "N", long: "no-spice-agent", argument: .none),
        .init(short: "O", long: "no-lock-on-disconnect", argument: .none),
        .init(short: "G", long: "lock-grace", argument: .required),
        .init(short: "X", long: "x11-display", argument: .required),
    ]

    /// Splits argv into (option letter, value) pairs, getopt_long style.
    private static func tokenize(_ args: [String]) -> Swift.Result<[(Character, String?)], ParseError> {
        var out: [(Character, String?)] = []
        var i = 0
        while i < args.count {
            let arg = args[i]
            i += 1
            var option: Option?
            var value: String?
            if arg.hasPrefix("--") {
                let body = arg.dropFirst(2)
                let name = body.split(separator: "=", maxSplits: 1).first.map(String.init) ?? ""
                option = options.first { $0.long == name }
                if let eq = body.firstIndex(of: "=") { value = String(body[body.index(after: eq)...]) }
            } else if arg.hasPrefix("-"), arg.count >= 2 {
                let letter = arg[arg.index(after: arg.startIndex)]
                option = options.first { $0.short == letter }
                if arg.count > 2 { value = String(arg.dropFirst(2)) }
            } else {
                return .failure(ParseError("unexpected argument '\(arg)'"))
            }
            guard let option else { return .failure(ParseError("unknown option '\(arg)'")) }
            switch option.argument {
            case .none:
                if value != nil { return .failure(ParseError("option '\(arg)' takes no value")) }
            case .required:
                if value == nil {
                    guard i < args.count else { return .failure(ParseError("option '\(arg)' needs a value")) }
                    value = args[i]
                    i += 1
                }
            case .optional:
                break  // only "-Fpath" / "--fsfreeze-hook=path", as getopt's optional arguments
            }
            out.append((option.short, value))
        }
        return .success(out)
    }

    struct ParseError: Error {
        var message: String
        init(_ m: String) { message = m }
    }

    static func parse(_ args: [String], environment: (String) -> String? = { getenv($0).map { String(cString: $0) } },
                      readFile: (String) -> String? = FileIO.readText) -> Result
    {
        let tokens: [(Character, String?)]
        switch tokenize(args) {
        case .failure(let e): return .exit(code: 1, message: "guest-agent: \(e.message)\n\(usage)")
        case .success(let t): tokens = t
        }
        var config = AgentConfig()
        config.systemBusPath = SystemBus.socketPath(address: environment("DBUS_SYSTEM_BUS_ADDRESS"))
        config.x11Display = environment("DISPLAY")
        // The config file first, so that options override it.
        let explicitConfig = tokens.last { $0.0 == "c" }?.1
        let configPath = explicitConfig ?? environment("QGA_CONF") ?? AgentConfig.defaultConfigPath
        if let text = readFile(configPath) {
            do {
                try apply(configFile: text, to: &config)
            } catch {
                return .exit(code: 1, message: "guest-agent: \(configPath): \(error.message)\n")
            }
        } else if explicitConfig != nil || environment("QGA_CONF") != nil {
            return .exit(code: 1, message: "guest-agent: cannot read config file \(configPath)\n")
        }
        var dump = false
        for (letter, value) in tokens {
            switch letter {
            case "h": return .exit(code: 0, message: usage)
            case "V": return .exit(code: 0, message: "guest-agent \(AgentVersion.string) (qemu-guest-agent protocol)\n")
            case "D": dump = true
            case "v": config.verbose = true
            case "m":
                guard let m = AgentConfig.Method(rawValue: value!) else {
                    return .exit(code: 1, message: "guest-agent: unsupported method '\(value!)' (virtio-serial or unix-listen)\n")
                }
                config.method = m
            case "p": config.path = value
            case "t":
                guard value!.hasPrefix("/") else {
                    return .exit(code: 1, message: "guest-agent: --statedir must be an absolute path\n")
                }
                config.stateDir = value!
            case "F": config.freezeHook = value ?? AgentConfig.defaultFreezeHook
            case "l": config.logFile = value
            case "S": config.spicePath = value
            case "N": config.spiceAgent = false
            case "O": config.lockOnDisconnect = false
            case "G":
                guard let seconds = Int(value!), (0...3600).contains(seconds) else {
                    return .exit(code: 1, message: "guest-agent: --lock-grace needs whole seconds from 0 to 3600\n")
                }
                config.lockGraceSeconds = seconds
            case "X": config.x11Display = value
            case "f": config.pidFile = value
            case "a", "b":
                if value == "help" {
                    return .exit(code: 0, message: CommandTable.standard.specs.map(\.name).joined(separator: "\n") + "\n")
                }
                let list = value!.split(separator: ",").map(String.init)
                if letter == "a" { config.allowRPCs = list } else { config.blockRPCs = list }
            default: break  // -c handled above; -d and -r accepted for compatibility
            }
        }
        if config.method == .unixListen && config.path == nil {
            return .exit(code: 1, message: "guest-agent: unix-listen needs -p PATH\n")
        }
        if dump { return .exit(code: 0, message: config.dump()) }
        return .run(config)
    }

    /// Applies a qemu-ga key file: `[general]` with `key=value` lines.
    static func apply(configFile text: String, to config: inout AgentConfig) throws(ParseError) {
        var section = ""
        for (number, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingSpaces()
            if line.isEmpty || line.hasPrefix("#") { continue }
            if line.hasPrefix("[") {
                section = String(line.dropFirst().prefix { $0 != "]" })
                continue
            }
            guard section == "general" else { continue }
            guard let eq = line.firstIndex(of: "=") else { throw ParseError("line \(number + 1): expected key=value") }
            let key = String(line[..<eq]).trimmingSpaces()
            let value = String(line[line.index(after: eq)...]).trimmingSpaces()
            let list = value.split(whereSeparator: { $0 == ";" || $0 == "," }).map(String.init)
            func bool() throws(ParseError) -> Bool {
                switch value.lowercased() {
                case "true", "1", "yes": return true
                case "false", "0", "no": return false
                default: throw ParseError("line \(number + 1): '\(key)' must be true or false")
                }
            }
            switch key {
            case "method":
                guard let m = AgentConfig.Method(rawValue: value) else {
                    throw ParseError("line \(number + 1): unsupported method '\(value)'")
                }
                config.method = m
            case "path": config.path = value
            case "statedir": config.stateDir = value
            case "fsfreeze-hook": config.freezeHook = value.isEmpty ? AgentConfig.defaultFreezeHook : value
            case "verbose": config.verbose = try bool()
            case "allow-rpcs": config.allowRPCs = list.isEmpty ? nil : list
            case "block-rpcs": config.blockRPCs = list
            case "logfile": config.logFile = value
            case "pidfile": config.pidFile = value
            case "x11-display": config.x11Display = value
            case "daemon", "retry-path": _ = try bool()
            case "lock-on-disconnect": config.lockOnDisconnect = try bool()
            case "lock-grace":
                guard let seconds = Int(value), (0...3600).contains(seconds) else {
                    throw ParseError("line \(number + 1): 'lock-grace' must be whole seconds from 0 to 3600")
                }
                config.lockGraceSeconds = seconds
            default: throw ParseError("line \(number + 1): unknown key '\(key)'")
            }
        }
    }
}

enum AgentVersion {
    static let string = "0.2.0"
}

extension StringProtocol {
    /// Without leading and trailing spaces, tabs and carriage returns.
    func trimmingSpaces() -> String {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\r" }
        guard let first = firstIndex(where: { !isSpace($0) }), let last = lastIndex(where: { !isSpace($0) }) else {
            return ""
        }
        return String(self[first...last])
    }
}
