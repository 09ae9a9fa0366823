import CLinuxSupport
#if canImport(Glibc)
import Glibc
#endif

/// How a child process ended.
public enum ExitStatus: Sendable, Equatable, CustomStringConvertible {
    case exited(Int32)
    case signaled(Int32)

    /// Decodes a waitpid status (WIFEXITED and friends are macros Swift cannot import).
    public init(waitStatus status: Int32) {
        let signal = status & 0x7F
        self = signal == 0 ? .exited((status >> 8) & 0xFF) : .signaled(signal)
    }

    public var isSuccess: Bool { self == .exited(0) }

    public var description: String {
        switch self {
        case .exited(let code): return "exited with status \(code)"
        case .signaled(let sig): return "killed by signal \(sig) (\(String(cString: strsignal(sig))))"
        }
    }
}

/// Starts programs directly with an argument vector: no shell ever sees a
/// guest- or client-supplied string.
public enum Subprocess {
    public enum Detach: Int32 {
        case none = 0
        case processGroup = 1
        case session = 2
    }

    /// Forks and execs. `stdio` fds of -1 inherit the parent's; `inherit[i]` is
    /// fd 3 + i in the child (every other fd is closed there). With
    /// `dieWithParent` the child is killed when the calling *thread* exits, so
    /// call it from a thread that lives as long as the process (the event loop).
    public static func spawn(
        _ argv: [String], environment: [String]? = nil, stdin: Int32 = -1, stdout: Int32 = -1, stderr: Int32 = -1,
        inherit: [Int32] = [], detach: Detach = .none, dieWithParent: Bool = false
    ) throws(SystemError) -> pid_t {
        let env = environment ?? currentEnvironment()
        let cArgs = argv.map { strdup($0) } + [nil]
        let cEnv = env.map { strdup($0) } + [nil]
        defer {
            cArgs.forEach { free($0) }
            cEnv.forEach { free($0) }
        }
        let path = resolve(argv[0], environment: env)
        let pid = cArgs.withUnsafeBufferPointer { a in
            cEnv.withUnsafeBufferPointer { e in
                inherit.withUnsafeBufferPointer { fds in
                    clinux_spawn(path, a.baseAddress, e.baseAddress, stdin, stdout, stderr, fds.baseAddress,
                                 Int32(fds.count), detach.rawValue, dieWithParent ? 1 : 0)
                }
            }
        }
        guard pid > 0 else { throw SystemError("fork", argv[0]) }
        return pid
    }

    /// Blocks until `pid` exits.
    public static func wait(_ pid: pid_t) throws(SystemError) -> ExitStatus {
        var status: Int32 = 0
        guard Syscall.retrying({ waitpid(pid, &status, 0) }) == pid else { throw SystemError("waitpid") }
        return ExitStatus(waitStatus: status)
    }

    /// Reaps `pid` if it has exited.
    public static func poll(_ pid: pid_t) -> ExitStatus? {
        var status: Int32 = 0
        guard Syscall.retrying({ waitpid(pid, &status, WNOHANG) }) == pid else { return nil }
        return ExitStatus(waitStatus: status)
    }

    /// A descriptor that turns readable when `pid` exits (pidfd_open).
    public static func exitDescriptor(_ pid: pid_t) throws(SystemError) -> Int32 {
        let fd = clinux_pidfd_open(pid)
        guard fd >= 0 else { throw SystemError("pidfd_open") }
        return fd
    }

    public static func currentEnvironment() -> [String] {
        var result: [String] = []
        var p = environ
        while let entry = p.pointee {
            result.append(String(cString: entry))
            p += 1
        }
        return result
    }

    /// PATH lookup for a bare program name, like execvp.
    public static func resolve(_ program: String, environment: [String]) -> String {
        if program.contains("/") { return program }
        let pathVar = environment.first(where: { $0.hasPrefix("PATH=") })?.dropFirst(5) ?? "/usr/sbin:/usr/bin:/sbin:/bin"
        for dir in pathVar.split(separator: ":") {
            let candidate = "\(dir)/\(program)"
            if access(candidate, X_OK) == 0 { return candidate }
        }
        return program
    }

    /// Runs to completion with stdin from /dev/null and the given stdout/stderr.
    public static func run(_ argv: [String], environment: [String]? = nil, stdout: Int32 = -1, stderr: Int32 = -1)
        throws(SystemError) -> ExitStatus
    {
        let devNull = open("/dev/null", O_RDWR | O_CLOEXEC)
        defer { if devNull >= 0 { close(devNull) } }
        let pid = try spawn(argv, environment: environment, stdin: devNull, stdout: stdout, stderr: stderr)
        return try wait(pid)
    }
}

extension Subprocess {
    /// Feeds `input` to `stdin` (then closes it) while reading each of
    /// `outputs` until end of file, handing every chunk to `onData` with the
    /// index of its stream. Closes every fd it was given. Blocks until done.
    public static func pump(stdin: Int32?, input: [UInt8], outputs: [Int32],
                            onData: (_ stream: Int, _ chunk: ArraySlice<UInt8>) -> Void)
    {
        var stdinFD = stdin
        var open = outputs.enumerated().map { (fd: $0.element, index: $0.offset) }
        var written = 0
        for fd in ([stdin].compactMap { $0 } + outputs) { Syscall.setNonBlocking(fd) }
        if let fd = stdinFD, input.isEmpty {
            close(fd)
            stdinFD = nil
        }
        var buffer = [UInt8](repeating: 0, count: 65536)
        while stdinFD != nil || !open.isEmpty {
            var pfds = open.map { pollfd(fd: $0.fd, events: Int16(POLLIN), revents: 0) }
            if let fd = stdinFD { pfds.append(pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)) }
            if Syscall.retrying({ Glibc.poll(&pfds, nfds_t(pfds.count), -1) }) < 0 { break }
            if let fd = stdinFD, let p = pfds.last, p.revents != 0 {
                let n = input.withUnsafeBytes { raw in write(fd, raw.baseAddress! + written, raw.count - written) }
                if n > 0 { written += n }
                if (n < 0 && errno != EAGAIN) || written == input.count || (p.revents & Int16(POLLERR | POLLHUP)) != 0 {
                    close(fd)
                    stdinFD = nil
                }
            }
            var finished: [Int32] = []
            for (i, stream) in open.enumerated() where pfds[i].revents != 0 {
                let n = buffer.withUnsafeMutableBytes { read(stream.fd, $0.baseAddress, $0.count) }
                if n > 0 {
                    onData(stream.index, buffer[0..<n])
                } else if n == 0 || errno != EAGAIN {
                    finished.append(stream.fd)
                }
            }
            for fd in finished {
                close(fd)
                open.removeAll { $0.fd == fd }
            }
        }
    }

    /// Runs to completion feeding `input` to stdin and collecting stdout and
    /// stderr (each up to `limit` bytes; more is read and dropped).
    public static func runCapturing(_ argv: [String], input: [UInt8] = [], environment: [String]? = nil,
                                    limit: Int = 1 << 20) throws(SystemError)
        -> (status: ExitStatus, stdout: [UInt8], stderr: [UInt8])
    {
        var fds: [Int32] = []
        for _ in 0..<3 {
            var pair: [Int32] = [0, 0]
            guard pipe(&pair) == 0 else {
                fds.forEach { close($0) }
                throw SystemError("pipe")
            }
            fds += pair
        }
        for fd in fds { Syscall.setCloseOnExec(fd) }
        let pid: pid_t
        do {
            pid = try spawn(argv, environment: environment, stdin: fds[0], stdout: fds[3], stderr: fds[5])
        } catch {
            fds.forEach { close($0) }
            throw error
        }
        for fd in [fds[0], fds[3], fds[5]] { close(fd) }
        var outputs: [[UInt8]] = [[], []]
        pump(stdin: fds[1], input: input, outputs: [fds[2], fds[4]]) { stream, chunk in
            outputs[stream] += chunk.prefix(max(0, limit - outputs[stream].count))
        }
        return (try wait(pid), outputs[0], outputs[1])
    }
}
