import AgentProtocol
import LinuxSystem
#if canImport(Glibc)
import Glibc
#endif

/// Processes started by guest-exec, until guest-exec-status has reported their end.
final class ExecTable: @unchecked Sendable {
    final class Record {
        var status: ExitStatus?
        var out: [UInt8] = []
        var err: [UInt8] = []
        var outTruncated = false
        var errTruncated = false
        let capturesOut: Bool
        let capturesErr: Bool
        init(capturesOut: Bool, capturesErr: Bool) {
            self.capturesOut = capturesOut
            self.capturesErr = capturesErr
        }
    }

    private let monitor = Monitor()
    private var records: [Int64: Record] = [:]

    func add(_ pid: Int64, _ record: Record) { monitor.withLock { records[pid] = record } }

    func update(_ pid: Int64, _ body: (Record) -> Void) {
        monitor.withLock { if let r = records[pid] { body(r) } }
    }

    /// The status reply; the first one that reports the exit also forgets the process.
    func status(_ pid: Int64) throws(QGAError) -> JSONValue {
        monitor.lock()
        defer { monitor.unlock() }
        guard let r = records[pid] else { throw .generic("PID \(pid) does not exist") }
        guard let status = r.status else { return .object(["exited": false]) }
        records.removeValue(forKey: pid)
        var reply: JSONObject = ["exited": true]
        switch status {
        case .exited(let code): reply["exitcode"] = .int(Int64(code))
        case .signaled(let sig): reply["signal"] = .int(Int64(sig))
        }
        if r.capturesOut && !r.out.isEmpty { reply["out-data"] = .string(Base64.encode(r.out)) }
        if r.capturesErr && !r.err.isEmpty { reply["err-data"] = .string(Base64.encode(r.err)) }
        if r.outTruncated { reply["out-truncated"] = true }
        if r.errTruncated { reply["err-truncated"] = true }
        return .object(reply)
    }
}

/// guest-exec and guest-exec-status (protocols.md §1.9): no shell, arguments
/// passed as given; output captured in the background up to 16 MiB a stream.
enum ExecCommands {
    static let maxCapture = 16 << 20

    enum Capture: String {
        case none, stdout, stderr, separated, merged
    }

    static let specs: [CommandSpec] = [
        CommandSpec(name: "guest-exec") { args, context throws(QGAError) in
            let path = try args.string("path")
            let argv = try args.optionalStringArray("arg") ?? []
            let env = try args.optionalStringArray("env")
            let input = try args.optionalString("input-data").map { (s: String) throws(QGAError) in try Base64.decode(s) }
            let capture = try captureArgument(&args)
            try args.finish()
            let pid = try start(path: path, argv: argv, env: env, input: input, capture: capture, table: context.state.processes)
            return .reply(.object(["pid": .int(pid)]))
        },
        CommandSpec(name: "guest-exec-status", runsInline: true) { args, context throws(QGAError) in
            let pid = try args.int("pid")
            try args.finish()
            return .reply(try context.state.processes.status(pid))
        },
    ]

    /// `capture-output` is an alternate: a bool (true = separated) or a mode name.
    private static func captureArgument(_ args: inout QGAArguments) throws(QGAError) -> Capture {
        switch args.optionalValue("capture-output") {
        case nil, .bool(false)?: return .none
        case .bool(true)?: return .separated
        case .string(let s)?:
            guard let c = Capture(rawValue: s) else {
                throw .generic("Parameter 'capture-output' does not accept value '\(s)'")
            }
            return c
        case .some:
            throw .invalidParameterType("capture-output", expected: "GuestExecCaptureOutput")
        }
    }

    private static func start(path: String, argv: [String], env: [String]?, input: [UInt8]?, capture: Capture,
                              table: ExecTable) throws(QGAError) -> Int64
    {
        let environment = env ?? Subprocess.currentEnvironment()
        let program = Subprocess.resolve(path, environment: environment)
        guard access(program, X_OK) == 0 else {
            throw .generic("Failed to execute child process \u{201C}\(path)\u{201D} (\(FileIO.errnoText()))")
        }
        var pipes: [Int32] = []
        defer { for fd in pipes { close(fd) } }
        func makePipe() throws(QGAError) -> (read: Int32, write: Int32) {
            var fds: [Int32] = [0, 0]
            guard pipe(&fds) == 0 else { throw .generic("failed to create a pipe: \(FileIO.errnoText())") }
            for fd in fds { Syscall.setCloseOnExec(fd) }
            pipes += fds
            return (fds[0], fds[1])
        }
        let devNull = open("/dev/null", O_RDWR | O_CLOEXEC)
        defer { close(devNull) }
        let stdinPipe = input != nil ? try makePipe() : nil
        let capturesOut = [.stdout, .separated, .merged].contains(capture)
        let capturesErr = [.stderr, .separated].contains(capture)
        let outPipe = capturesOut ? try makePipe() : nil
        let errPipe = capturesErr ? try makePipe() : nil
        let pid: pid_t
        do {
            pid = try Subprocess.spawn(
                [program] + argv, environment: environment,
                stdin: stdinPipe?.read ?? devNull,
                stdout: outPipe?.write ?? devNull,
                stderr: capture == .merged ? outPipe!.write : (errPipe?.write ?? devNull))
        } catch {
            throw .generic("Failed to execute child process \u{201C}\(path)\u{201D} (\(FileIO.errnoText(error.errno)))")
        }
        // The child has its copies; keep only our ends (dup'd, since `pipes` closes all on return).
        let stdinFD = stdinPipe.map { dup($0.write) }
        let outFD = outPipe.map { dup($0.read) }
        let errFD = errPipe.map { dup($0.read) }
        for fd in [stdinFD, outFD, errFD].compactMap({ $0 }) { Syscall.setCloseOnExec(fd) }
        let record = ExecTable.Record(capturesOut: capturesOut, capturesErr: capturesErr)
        table.add(Int64(pid), record)
        Threads.detach {
            collect(pid: pid, stdin: stdinFD, input: input ?? [], out: outFD, err: errFD, table: table)
        }
        return Int64(pid)
    }

    /// Feeds stdin, gathers output (dropping what exceeds the cap), then reaps.
    private static func collect(pid: pid_t, stdin: Int32?, input: [UInt8], out: Int32?, err: Int32?, table: ExecTable) {
        let streams = [(out, true), (err, false)].compactMap { fd, isOut in fd.map { ($0, isOut) } }
        Subprocess.pump(stdin: stdin, input: input, outputs: streams.map(\.0)) { index, chunk in
            let isOut = streams[index].1
            table.update(Int64(pid)) { r in
                let room = max(0, maxCapture - (isOut ? r.out.count : r.err.count))
                if isOut {
                    r.out += chunk.prefix(room)
                    if chunk.count > room { r.outTruncated = true }
                } else {
                    r.err += chunk.prefix(room)
                    if chunk.count > room { r.errTruncated = true }
                }
            }
        }
        let status = (try? Subprocess.wait(pid)) ?? .exited(-1)
        table.update(Int64(pid)) { $0.status = status }
    }
}
