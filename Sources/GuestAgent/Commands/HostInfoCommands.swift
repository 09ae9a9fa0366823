import AgentProtocol
import LinuxSystem
#if canImport(Glibc)
import Glibc
#endif

/// guest-get-host-name, guest-get-osinfo, guest-get-users, guest-get-load.
enum HostInfoCommands {
    static let specs: [CommandSpec] = [
        CommandSpec(name: "guest-get-host-name", runsInline: true) { args, _ throws(QGAError) in
            try args.finish()
            var buffer = [CChar](repeating: 0, count: 256)
            guard gethostname(&buffer, buffer.count) == 0 else {
                throw .generic("failed to get host name: \(FileIO.errnoText())")
            }
            return .reply(.object(["host-name": .string(String(cString: buffer))]))
        },
        CommandSpec(name: "guest-get-osinfo", runsInline: true) { args, _ throws(QGAError) in
            try args.finish()
            return .reply(.object(osInfo()))
        },
        CommandSpec(name: "guest-get-users") { args, _ throws(QGAError) in
            try args.finish()
            return .reply(.array(loggedInUsers()))
        },
        CommandSpec(name: "guest-get-load", runsInline: true) { args, _ throws(QGAError) in
            try args.finish()
            guard let text = FileIO.readLine("/proc/loadavg") else {
                throw .generic("cannot read /proc/loadavg: \(FileIO.errnoText())")
            }
            let loads = text.split(separator: " ").prefix(3).compactMap { Double($0) }
            guard loads.count == 3 else { throw .generic("unexpected /proc/loadavg contents") }
            return .reply(.object(["load1m": .double(loads[0]), "load5m": .double(loads[1]), "load15m": .double(loads[2])]))
        },
    ]

    /// uname(2) plus os-release(5), with qemu-ga's key names; absent facts are absent keys.
    static func osInfo() -> JSONObject {
        var info = JSONObject()
        var u = utsname()
        if uname(&u) == 0 {
            func field<T>(_ value: T) -> String {
                withUnsafeBytes(of: value) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            }
            info["kernel-release"] = .string(field(u.release))
            info["kernel-version"] = .string(field(u.version))
            info["machine"] = .string(field(u.machine))
        }
        let release = FileIO.readText("/etc/os-release") ?? FileIO.readText("/usr/lib/os-release") ?? ""
        let keys = ["ID": "id", "NAME": "name", "PRETTY_NAME": "pretty-name", "VERSION": "version",
                    "VERSION_ID": "version-id", "VARIANT": "variant", "VARIANT_ID": "variant-id"]
        for line in release.split(separator: "\n") {
            guard let eq = line.firstIndex(of: "=") else { continue }
            guard let key = keys[String(line[..<eq])] else { continue }
            info[key] = .string(unquote(line[line.index(after: eq)...]))
        }
        return info
    }

    /// os-release values may be quoted with " or ' and use backslash escapes.
    static func unquote(_ raw: Substring) -> String {
        var s = raw.trimmingSpaces()
        if let q = s.first, q == "\"" || q == "'", s.count >= 2, s.last == q {
            s = String(s.dropFirst().dropLast())
        }
        var out = ""
        var escaped = false
        for c in s {
            if escaped {
                out.append(c)
                escaped = false
            } else if c == "\\" {
                escaped = true
            } else {
                out.append(c)
            }
        }
        return out
    }

    /// Users with a login session in utmp, each once, with their earliest login.
    static func loggedInUsers() -> [JSONValue] {
        var earliest: [(String, Double)] = []
        setutxent()
        defer { endutxent() }
        while let entry = getutxent() {
            guard entry.pointee.ut_type == USER_PROCESS else { continue }
            let user = withUnsafeBytes(of: entry.pointee.ut_user) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            guard !user.isEmpty else { continue }
            let time = Double(entry.pointee.ut_tv.tv_sec) + Double(entry.pointee.ut_tv.tv_usec) / 1e6
            if let i = earliest.firstIndex(where: { $0.0 == user }) {
                earliest[i].1 = min(earliest[i].1, time)
            } else {
                earliest.append((user, time))
            }
        }
        return earliest.map { .object(["user": .string($0.0), "login-time": .double($0.1)]) }
    }
}
