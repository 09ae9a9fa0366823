#if canImport(Glibc)
import Glibc
#endif

/// Command-line options, spelled like qemu-ga's so that units, udev rules and
/// habits written for qemu-ga work unchanged (`-m virtio-serial -p PATH`).
struct AgentOptions {
    enum Method: String {
        case virtioSerial = "virtio-serial"
        case unixListen = "unix-listen"
    }

    static let defaultVirtioPath = "/dev/virtio-ports/org.qemu.guest_agent.0"

    var method: Method = .virtioSerial
    var path: String? = nil
    var verbose = false

    var channelPath: String {
        if let path { return path }
        return Self.defaultVirtioPath
    }

    static let usage = """
        Usage: guest-agent [-m METHOD] [-p PATH] [-v]
        A guest agent that speaks the qemu-guest-agent protocol.

          -m, --method=METHOD  transport: virtio-serial (default) or unix-listen
          -p, --path=PATH      device or socket path
                               (default for virtio-serial: \(defaultVirtioPath))
          -v, --verbose        log every request and reply to stderr
          -V, --version        print the version and exit
          -h, --help           print this help and exit

        """

    enum ParseResult {
        case run(AgentOptions)
        case exit(code: Int32, message: String)
    }

    static func parse(_ args: [String]) -> ParseResult {
        var options = AgentOptions()
        var i = 0
        // Accepts "-m X", "-mX", "--method X" and "--method=X", as getopt_long does.
        func value(for arg: String, short: String, long: String) -> String?? {
            if arg == short || arg == long {
                i += 1
                return i < args.count ? .some(args[i]) : .some(nil)
            }
            if arg.hasPrefix(long + "=") { return .some(String(arg.dropFirst(long.count + 1))) }
            if arg.hasPrefix(short), arg.count > 2, !arg.hasPrefix("--") { return .some(String(arg.dropFirst(2))) }
            return nil
        }
        while i < args.count {
            let arg = args[i]
            if arg == "-h" || arg == "--help" { return .exit(code: 0, message: usage) }
            if arg == "-V" || arg == "--version" { return .exit(code: 0, message: "guest-agent \(AgentVersion.string)\n") }
            if arg == "-v" || arg == "--verbose" {
                options.verbose = true
            } else if let v = value(for: arg, short: "-m", long: "--method") {
                guard let v else { return .exit(code: 1, message: "guest-agent: option \(arg) needs a value\n") }
                guard let m = Method(rawValue: v) else {
                    return .exit(code: 1, message: "guest-agent: unsupported method '\(v)' (virtio-serial or unix-listen)\n")
                }
                options.method = m
            } else if let v = value(for: arg, short: "-p", long: "--path") {
                guard let v else { return .exit(code: 1, message: "guest-agent: option \(arg) needs a value\n") }
                options.path = v
            } else {
                return .exit(code: 1, message: "guest-agent: unknown option '\(arg)'\n" + usage)
            }
            i += 1
        }
        if options.method == .unixListen && options.path == nil {
            return .exit(code: 1, message: "guest-agent: unix-listen needs -p PATH\n")
        }
        return .run(options)
    }
}

enum AgentVersion {
    static let string = "0.1.0"
}
