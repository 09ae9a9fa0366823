import AgentProtocol
import LinuxSystem

/// The kernel's routing tables as guest-network-get-route reports them
/// (/proc/net/route and /proc/net/ipv6_route). Field types follow QEMU's
/// schema, including its prefix lengths as decimal strings for IPv6.
enum RouteTable {
    static func ipv4(_ text: String? = FileIO.readText("/proc/net/route")) -> [JSONValue] {
        var routes: [JSONValue] = []
        for line in (text ?? "").split(separator: "\n").dropFirst() {
            let f = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard f.count >= 11, let dest = UInt32(f[1], radix: 16), let gateway = UInt32(f[2], radix: 16),
                  let mask = UInt32(f[7], radix: 16)
            else { continue }
            let n = f.compactMap { Int64($0) }
            guard n.count >= 7 else { continue }
            routes.append(.object([
                "iface": .string(String(f[0])), "destination": .string(dotted(dest)), "gateway": .string(dotted(gateway)),
                "mask": .string(dotted(mask)), "flags": .int(Int64(f[3], radix: 16) ?? 0), "refcnt": .int(Int64(f[4]) ?? 0),
                "use": .int(Int64(f[5]) ?? 0), "metric": .int(Int64(f[6]) ?? 0), "mtu": .int(Int64(f[8]) ?? 0),
                "window": .int(Int64(f[9]) ?? 0), "irtt": .int(Int64(f[10]) ?? 0), "version": 4,
            ]))
        }
        return routes
    }

    static func ipv6(_ text: String? = FileIO.readText("/proc/net/ipv6_route")) -> [JSONValue] {
        var routes: [JSONValue] = []
        for line in (text ?? "").split(separator: "\n") {
            let f = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard f.count >= 10, let destLen = UInt8(f[1], radix: 16), let srcLen = UInt8(f[3], radix: 16) else { continue }
            let metric = UInt32(f[5], radix: 16).map { Int64(Int32(bitPattern: $0)) } ?? 0
            routes.append(.object([
                "iface": .string(String(f[9])), "destination": .string(ipv6Text(f[0])),
                "desprefixlen": .string(String(destLen)), "source": .string(ipv6Text(f[2])),
                "srcprefixlen": .string(String(srcLen)), "nexthop": .string(ipv6Text(f[4])),
                "metric": .int(metric), "refcnt": .int(Int64(f[6], radix: 16) ?? 0),
                "use": .int(Int64(f[7], radix: 16) ?? 0), "flags": .int(Int64(f[8], radix: 16) ?? 0), "version": 6,
            ]))
        }
        return routes
    }

    /// /proc/net/route stores IPv4 addresses as little-endian hex.
    private static func dotted(_ v: UInt32) -> String {
        "\(v & 0xFF).\(v >> 8 & 0xFF).\(v >> 16 & 0xFF).\(v >> 24)"
    }

    /// 32 hex digits to the compressed text form (RFC 5952: longest zero run becomes "::").
    static func ipv6Text(_ hex: Substring) -> String {
        guard hex.count == 32 else { return String(hex) }
        var groups: [UInt16] = []
        var i = hex.startIndex
        for _ in 0..<8 {
            let j = hex.index(i, offsetBy: 4)
            groups.append(UInt16(hex[i..<j], radix: 16) ?? 0)
            i = j
        }
        var best = (start: -1, length: 0)
        var run = (start: -1, length: 0)
        for (k, g) in groups.enumerated() {
            if g == 0 {
                if run.start < 0 { run = (k, 0) }
                run.length += 1
                if run.length > best.length { best = run }
            } else {
                run = (-1, 0)
            }
        }
        let text = groups.map { String($0, radix: 16) }
        guard best.length >= 2 else { return text.joined(separator: ":") }
        let head = text[..<best.start].joined(separator: ":")
        let tail = text[(best.start + best.length)...].joined(separator: ":")
        return head + "::" + tail
    }
}
