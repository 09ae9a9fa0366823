import AgentProtocol
import LinuxSystem
#if canImport(Glibc)
import Glibc
#endif

/// guest-network-get-interfaces: getifaddrs(3) for addresses, sysfs for the
/// hardware address, /proc/net/dev for counters (as qemu-ga). Interfaces keep
/// the kernel's order; statistics come with interfaces that have an address.
enum NetworkCommands {
    static let specs: [CommandSpec] = [
        CommandSpec(name: "guest-network-get-interfaces") { args, _ throws(QGAError) in
            try args.finish()
            return .reply(.array(try interfaces()))
        },
        CommandSpec(name: "guest-network-get-route") { args, _ throws(QGAError) in
            try args.finish()
            return .reply(.array(RouteTable.ipv4() + RouteTable.ipv6()))
        },
    ]

    private struct Interface {
        var name: String
        var addresses: [JSONValue] = []
    }

    static func interfaces() throws(QGAError) -> [JSONValue] {
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0 else { throw .generic("getifaddrs failed: \(FileIO.errnoText())") }
        defer { freeifaddrs(list) }
        var found: [Interface] = []
        var cursor = list
        while let entry = cursor {
            cursor = entry.pointee.ifa_next
            let name = String(cString: entry.pointee.ifa_name)
            if !found.contains(where: { $0.name == name }) { found.append(Interface(name: name)) }
            guard let address = entry.pointee.ifa_addr, let text = numericAddress(address) else { continue }
            let family = Int32(address.pointee.sa_family)
            let prefix = entry.pointee.ifa_netmask.map(prefixLength) ?? 0
            let i = found.firstIndex { $0.name == name }!
            found[i].addresses.append(.object([
                "ip-address-type": .string(family == AF_INET ? "ipv4" : "ipv6"),
                "ip-address": .string(text),
                "prefix": .int(Int64(prefix)),
            ]))
        }
        let counters = statistics()
        return found.map { iface in
            var obj: JSONObject = ["name": .string(iface.name)]
            if let mac = FileIO.readLine("/sys/class/net/\(iface.name)/address"), !mac.isEmpty {
                obj["hardware-address"] = .string(mac)
            }
            if !iface.addresses.isEmpty {
                obj["ip-addresses"] = .array(iface.addresses)
                if let stats = counters[iface.name] { obj["statistics"] = stats }
            }
            return .object(obj)
        }
    }

    /// "192.0.2.1" or "fe80::1" for AF_INET/AF_INET6; nil for other families.
    private static func numericAddress(_ sa: UnsafeMutablePointer<sockaddr>) -> String? {
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        switch Int32(sa.pointee.sa_family) {
        case AF_INET:
            return sa.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { sin in
                var a = sin.pointee.sin_addr
                return inet_ntop(AF_INET, &a, &buffer, socklen_t(buffer.count)).map { String(cString: $0) }
            }
        case AF_INET6:
            return sa.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { sin6 in
                var a = sin6.pointee.sin6_addr
                return inet_ntop(AF_INET6, &a, &buffer, socklen_t(buffer.count)).map { String(cString: $0) }
            }
        default:
            return nil
        }
    }

    /// Leading one bits of a netmask.
    private static func prefixLength(_ mask: UnsafeMutablePointer<sockaddr>) -> Int {
        let length = Int32(mask.pointee.sa_family) == AF_INET6 ? MemoryLayout<sockaddr_in6>.size : MemoryLayout<sockaddr_in>.size
        let (offset, count) = Int32(mask.pointee.sa_family) == AF_INET6
            ? (MemoryLayout<sockaddr_in6>.offset(of: \sockaddr_in6.sin6_addr)!, 16)
            : (MemoryLayout<sockaddr_in>.offset(of: \sockaddr_in.sin_addr)!, 4)
        let bytes = UnsafeRawBufferPointer(start: UnsafeRawPointer(mask), count: length)[offset..<offset + count]
        return bytes.reduce(0) { $0 + $1.nonzeroBitCount }
    }

    /// /proc/net/dev: "name: rx-bytes rx-packets rx-errs rx-drop fifo frame compressed multicast tx-bytes ...".
    private static func statistics() -> [String: JSONValue] {
        var result: [String: JSONValue] = [:]
        for line in (FileIO.readText("/proc/net/dev") ?? "").split(separator: "\n") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let name = line[..<colon].trimmingSpaces()
            let v = line[line.index(after: colon)...].split(separator: " ").compactMap { Int64($0) }
            guard v.count >= 12 else { continue }
            result[name] = .object([
                "rx-bytes": .int(v[0]), "rx-packets": .int(v[1]), "rx-errs": .int(v[2]), "rx-dropped": .int(v[3]),
                "tx-bytes": .int(v[8]), "tx-packets": .int(v[9]), "tx-errs": .int(v[10]), "tx-dropped": .int(v[11]),
            ])
        }
        return result
    }
}
