/// The VM's network (issue #14): one virtio-net NIC, unless `--net none`.
///
/// Decisions: user-mode networking (QEMU's slirp) by default, so a VM reaches
/// the host and beyond with nothing set up on the host; the host reaches the
/// guest through `--forward` rules, which listen on the host's loopback only (a
/// service in a VM is not offered to the network unless the person binds it so
/// with a bridge). `bridge:NAME` (qemu-bridge-helper, which must allow NAME in
/// /etc/qemu/bridge.conf) and `tap:NAME` (an existing tap device) are for real
/// deployments. The MAC is derived from the VM's name, so it is the same at every boot.
public struct NetworkSetup: Sendable, Equatable {
    public enum Mode: Sendable, Equatable {
        case none
        case user
        case bridge(String)
        case tap(String)
    }

    public struct Forward: Sendable, Equatable, CustomStringConvertible {
        public enum Proto: String, Sendable { case tcp, udp }
        public var proto: Proto
        public var hostPort: Int
        public var guestPort: Int

        public var description: String { "\(proto.rawValue):\(hostPort):\(guestPort)" }

        /// `tcp:HOSTPORT:GUESTPORT` or `udp:...`.
        public static func parse(_ text: String) throws(VMConfigError) -> Forward {
            let parts = text.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
            guard parts.count == 3, let proto = Proto(rawValue: parts[0]), let host = Int(parts[1]),
                let guest = Int(parts[2]), (1...65535).contains(host), (1...65535).contains(guest)
            else { throw .outOfRange("--forward must be tcp:HOSTPORT:GUESTPORT or udp:HOSTPORT:GUESTPORT (ports 1-65535), not '\(text)'") }
            return Forward(proto: proto, hostPort: host, guestPort: guest)
        }
    }

    public var mode = Mode.user
    public var forwards: [Forward] = []

    public init() {}

    /// `user`, `none`, `bridge:NAME`, `tap:NAME`.
    public static func parseMode(_ text: String) throws(VMConfigError) -> Mode {
        switch text {
        case "user": return .user
        case "none": return .none
        default:
            let (kind, name) = (text.prefix { $0 != ":" }, text.drop { $0 != ":" }.dropFirst())
            let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
            guard !name.isEmpty, name.count <= 15, name.allSatisfy(allowed.contains) else {
                throw .outOfRange("--net must be user, none, bridge:NAME or tap:NAME (an interface name), not '\(text)'")
            }
            switch kind {
            case "bridge": return .bridge(String(name))
            case "tap": return .tap(String(name))
            default: throw .outOfRange("--net must be user, none, bridge:NAME or tap:NAME, not '\(text)'")
            }
        }
    }

    /// 52:54:00 (QEMU's prefix) and three bytes of the name's FNV-1a hash.
    public static func mac(forVM name: String) -> String {
        var hash: UInt32 = 2_166_136_261
        for byte in name.utf8 {
            hash ^= UInt32(byte)
            hash = hash &* 16_777_619
        }
        let bytes = [UInt8(0x52), 0x54, 0x00, UInt8(hash >> 16 & 0xFF), UInt8(hash >> 8 & 0xFF), UInt8(hash & 0xFF)]
        return bytes.map { b in let s = String(b, radix: 16); return s.count == 1 ? "0" + s : s }.joined(separator: ":")
    }

    /// What `up` says about it.
    public var summary: String {
        switch mode {
        case .none: return "none (--net none)"
        case .user:
            let f = forwards.map { "\($0.proto.rawValue) 127.0.0.1:\($0.hostPort) -> guest \($0.guestPort)" }
            return "user mode (the guest gets 10.0.2.15 by DHCP, the host is 10.0.2.2)"
                + (f.isEmpty ? "" : "; forwarding " + f.joined(separator: ", "))
        case .bridge(let name): return "bridge \(name) (qemu-bridge-helper)"
        case .tap(let name): return "tap device \(name)"
        }
    }

    /// QEMU's -netdev and -device arguments.
    func qemuArguments(vmName: String) -> [String] {
        let netdev: String
        switch mode {
        case .none: return []
        case .user:
            netdev = "user,id=net0" + forwards.map { ",hostfwd=\($0.proto.rawValue):127.0.0.1:\($0.hostPort)-:\($0.guestPort)" }.joined()
        case .bridge(let name): netdev = "bridge,id=net0,br=\(name)"
        case .tap(let name): netdev = "tap,id=net0,ifname=\(name),script=no,downscript=no"
        }
        return ["-netdev", netdev, "-device", "virtio-net-pci,netdev=net0,id=nic0,mac=\(Self.mac(forVM: vmName))"]
    }
}
