import AgentProtocol
import LinuxSystem
#if canImport(Glibc)
import Glibc
#endif

/// Open guest files by handle. Handles count up from 1000 and the counter is
/// persisted as qemu-ga does (`[global] fd_counter=` in `qga.state`), so a
/// restarted agent never reissues a handle a host may still hold.
final class FileHandleTable: @unchecked Sendable {
    final class OpenFile {
        let stream: UnsafeMutablePointer<FILE>
        /// The last operation, so that switching between reading and writing
        /// repositions the stream as C requires.
        var lastWasWrite: Bool?
        init(_ stream: UnsafeMutablePointer<FILE>) { self.stream = stream }
    }

    private let monitor = Monitor()
    private var files: [Int64: OpenFile] = [:]
    private let statePath: String
    private var nextHandle: Int64

    init(stateDir: String) {
        statePath = "\(stateDir)/qga.state"
        let saved = FileIO.readText(statePath)?.split(separator: "\n")
            .first { $0.hasPrefix("fd_counter=") }.flatMap { Int64($0.dropFirst("fd_counter=".count)) }
        nextHandle = max(1000, saved ?? 1000)
    }

    func add(_ stream: UnsafeMutablePointer<FILE>) -> Int64 {
        monitor.withLock {
            let handle = nextHandle
            nextHandle += 1
            files[handle] = OpenFile(stream)
            try? FileIO.writeAtomically(statePath, Array("[global]\nfd_counter=\(nextHandle)\n".utf8), mode: 0o600)
            return handle
        }
    }

    /// Runs `body` with the open file, under the table's lock (taken by hand:
    /// `withLock` rethrows untyped errors).
    func with<T>(_ handle: Int64, _ body: (OpenFile) throws(QGAError) -> T) throws(QGAError) -> T {
        monitor.lock()
        defer { monitor.unlock() }
        guard let file = files[handle] else { throw .generic("handle '\(handle)' has not been found") }
        return try body(file)
    }

    func remove(_ handle: Int64) throws(QGAError) -> OpenFile {
        let file: OpenFile? = monitor.withLock { files.removeValue(forKey: handle) }
        guard let file else { throw .generic("handle '\(handle)' has not been found") }
        return file
    }
}

/// guest-file-open/read/write/seek/flush/close (protocols.md §1.10).
enum FileCommands {
    /// qemu-ga caps reads so that base64 (4/3) stays under its 64 MiB token limit.
    static let maxReadCount: Int64 = 48 << 20
    static let defaultReadCount: Int64 = 4096

    /// fopen modes qemu-ga accepts, with the open(2) flags it uses for each.
    static let modes: [String: Int32] = [
        "r": O_RDONLY, "rb": O_RDONLY,
        "w": O_WRONLY | O_CREAT | O_TRUNC, "wb": O_WRONLY | O_CREAT | O_TRUNC,
        "a": O_WRONLY | O_CREAT | O_APPEND, "ab": O_WRONLY | O_CREAT | O_APPEND,
        "r+": O_RDWR, "rb+": O_RDWR, "r+b": O_RDWR,
        "w+": O_RDWR | O_CREAT | O_TRUNC, "wb+": O_RDWR | O_CREAT | O_TRUNC, "w+b": O_RDWR | O_CREAT | O_TRUNC,
        "a+": O_RDWR | O_CREAT | O_APPEND, "ab+": O_RDWR | O_CREAT | O_APPEND, "a+b": O_RDWR | O_CREAT | O_APPEND,
    ]

    static let specs: [CommandSpec] = [
        CommandSpec(name: "guest-file-open") { args, context throws(QGAError) in
            let path = try args.string("path")
            let mode = try args.optionalString("mode") ?? "r"
            try args.finish()
            guard let flags = modes[mode] else { throw .generic("invalid file open mode '\(mode)'") }
            // Non-blocking so a FIFO or device never stalls the agent; no controlling tty.
            let fd = open(path, flags | O_NONBLOCK | O_NOCTTY | O_CLOEXEC, 0o666)
            guard fd >= 0 else {
                throw .generic("failed to open file '\(path)' (mode: '\(mode)'): \(FileIO.errnoText())")
            }
            guard let stream = fdopen(fd, mode) else {
                let e = errno
                close(fd)
                throw .generic("failed to open file '\(path)' (mode: '\(mode)'): \(FileIO.errnoText(e))")
            }
            return .reply(.int(context.state.files.add(stream)))
        },
        CommandSpec(name: "guest-file-close") { args, context throws(QGAError) in
            let handle = try args.int("handle")
            try args.finish()
            let file = try context.state.files.remove(handle)
            guard fclose(file.stream) == 0 else { throw .generic("failed to close handle: \(FileIO.errnoText())") }
            return .reply(.object([:]))
        },
        CommandSpec(name: "guest-file-read") { args, context throws(QGAError) in
            let handle = try args.int("handle")
            let count = try args.optionalInt("count") ?? defaultReadCount
            try args.finish()
            guard count >= 0, count <= maxReadCount else {
                throw .generic("value '\(count)' is invalid for argument count")
            }
            return .reply(try context.state.files.with(handle) { file throws(QGAError) in
                reposition(file, forWrite: false)
                var buffer = [UInt8](repeating: 0, count: Int(count))
                clearerr(file.stream)
                let n = buffer.withUnsafeMutableBytes { fread($0.baseAddress, 1, $0.count, file.stream) }
                if ferror(file.stream) != 0 {
                    let e = errno
                    clearerr(file.stream)
                    throw .generic("failed to read file: \(FileIO.errnoText(e))")
                }
                return .object([
                    "count": .int(Int64(n)), "buf-b64": .string(Base64.encode(buffer[0..<n])),
                    "eof": .bool(feof(file.stream) != 0),
                ])
            })
        },
        CommandSpec(name: "guest-file-write") { args, context throws(QGAError) in
            let handle = try args.int("handle")
            let data = try Base64.decode(try args.string("buf-b64"))
            let count = try args.optionalInt("count") ?? Int64(data.count)
            try args.finish()
            return .reply(try context.state.files.with(handle) { file throws(QGAError) in
                guard count >= 0, count <= Int64(data.count) else {
                    throw .generic("value '\(count)' is invalid for argument count")
                }
                reposition(file, forWrite: true)
                clearerr(file.stream)
                let n = data.withUnsafeBytes { fwrite($0.baseAddress, 1, Int(count), file.stream) }
                if ferror(file.stream) != 0 {
                    let e = errno
                    clearerr(file.stream)
                    throw .generic("failed to write to file: \(FileIO.errnoText(e))")
                }
                return .object(["count": .int(Int64(n)), "eof": .bool(feof(file.stream) != 0)])
            })
        },
        CommandSpec(name: "guest-file-seek") { args, context throws(QGAError) in
            let handle = try args.int("handle")
            let offset = try args.int("offset")
            let whence = try whenceArgument(&args)
            try args.finish()
            return .reply(try context.state.files.with(handle) { file throws(QGAError) in
                guard fseeko(file.stream, off_t(offset), whence) == 0 else {
                    throw .generic("failed to seek file: \(FileIO.errnoText())")
                }
                file.lastWasWrite = nil
                clearerr(file.stream)
                return .object(["position": .int(Int64(ftello(file.stream))), "eof": .bool(feof(file.stream) != 0)])
            })
        },
        CommandSpec(name: "guest-file-flush") { args, context throws(QGAError) in
            let handle = try args.int("handle")
            try args.finish()
            try context.state.files.with(handle) { file throws(QGAError) in
                guard fflush(file.stream) == 0 else { throw .generic("failed to flush file: \(FileIO.errnoText())") }
            }
            return .reply(.object([:]))
        },
    ]

    /// C requires a positioning call between reads and writes on one stream.
    private static func reposition(_ file: FileHandleTable.OpenFile, forWrite: Bool) {
        if let last = file.lastWasWrite, last != forWrite { fseeko(file.stream, 0, SEEK_CUR) }
        file.lastWasWrite = forWrite
    }

    /// `whence` is an alternate: 0/1/2 or "set"/"cur"/"end".
    private static func whenceArgument(_ args: inout QGAArguments) throws(QGAError) -> Int32 {
        guard let value = args.optionalValue("whence") else { throw .missingParameter("whence") }
        switch value {
        case .string(let s):
            switch s {
            case "set": return SEEK_SET
            case "cur": return SEEK_CUR
            case "end": return SEEK_END
            default: throw .generic("Parameter 'whence' does not accept value '\(s)'")
            }
        case .int, .uint:
            guard let code = value.int64Value, (0...2).contains(code) else {
                throw .generic("invalid whence code \(value.int64Value.map(String.init) ?? "\(value)")")
            }
            return Int32(code)
        default:
            throw .invalidParameterType("whence", expected: "QGASeek")
        }
    }
}
