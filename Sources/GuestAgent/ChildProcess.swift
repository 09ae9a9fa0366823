import CLinuxSupport
#if canImport(Glibc)
import Glibc
#endif

/// Runs a program directly (no shell: arguments are never interpolated).
enum ChildProcess {
    /// Returns the exit status, 128+signal for a killed child, or nil if it could not start.
    static func runAndWait(_ argv: [String], environment: [String] = ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]) -> Int32? {
        let cArgs = argv.map { strdup($0) } + [nil]
        let cEnv = environment.map { strdup($0) } + [nil]
        defer {
            cArgs.forEach { free($0) }
            cEnv.forEach { free($0) }
        }
        let devNull = open("/dev/null", O_RDWR | O_CLOEXEC)
        defer { if devNull >= 0 { close(devNull) } }
        let pid = cArgs.withUnsafeBufferPointer { a in
            cEnv.withUnsafeBufferPointer { e in
                clinux_spawn(argv[0], a.baseAddress, e.baseAddress, devNull, -1, -1, 0, 0)
            }
        }
        guard pid > 0 else { return nil }
        var status: Int32 = 0
        let r = Posix.retrying { waitpid(pid, &status, 0) }
        guard r == pid else { return nil }
        // WIFEXITED / WEXITSTATUS / WTERMSIG are macros Swift does not import.
        let termSignal = status & 0x7F
        if termSignal == 0 {
            let code = (status >> 8) & 0xFF
            return code == 127 ? nil : code
        }
        return 128 + termSignal
    }
}
