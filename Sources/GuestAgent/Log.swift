#if canImport(Glibc)
import Glibc
#endif

enum Log {
    static func info(_ message: String) {
        let line = "guest-agent: \(message)\n"
        _ = line.withCString { write(2, $0, strlen($0)) }
    }
}
