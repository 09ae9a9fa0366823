/// Little-endian field access at explicit offsets (style.md §4): nil past the end.
/// Shared by the wire codecs and by pvpanic's ELF core reader.
public struct LEReader: Sendable {
    public let bytes: ArraySlice<UInt8>
    public init(_ bytes: ArraySlice<UInt8>) { self.bytes = bytes }

    public func u8(_ o: Int) -> UInt8? {
        let i = bytes.startIndex + o
        return o >= 0 && i < bytes.endIndex ? bytes[i] : nil
    }

    public func u16(_ o: Int) -> UInt16? {
        guard let a = u8(o), let b = u8(o + 1) else { return nil }
        return UInt16(a) | UInt16(b) << 8
    }

    public func u32(_ o: Int) -> UInt32? {
        guard let a = u16(o), let b = u16(o + 2) else { return nil }
        return UInt32(a) | UInt32(b) << 16
    }

    public func u64(_ o: Int) -> UInt64? {
        guard let a = u32(o), let b = u32(o + 4) else { return nil }
        return UInt64(a) | UInt64(b) << 32
    }
}

extension Array where Element == UInt8 {
    mutating func appendLE(_ v: UInt32) {
        append(contentsOf: [UInt8(truncatingIfNeeded: v), UInt8(truncatingIfNeeded: v >> 8),
                            UInt8(truncatingIfNeeded: v >> 16), UInt8(truncatingIfNeeded: v >> 24)])
    }

    mutating func appendLE(_ v: UInt16) {
        append(contentsOf: [UInt8(truncatingIfNeeded: v), UInt8(truncatingIfNeeded: v >> 8)])
    }
}

/// Payload encoding and decoding for each message type. `peer` is what the
/// other side announced: it decides the selection prefix and the grab serial.
public enum VDAgentCodec {
    public static func encode(_ message: VDAgentMessage, peer: VDAgentCapabilities) -> [UInt8] {
        var out: [UInt8] = []
        func selection(_ s: VDAgentSelection) {
            if peer.contains(.clipboardSelection) { out += [s.rawValue, 0, 0, 0] }
        }
        switch message {
        case .announceCapabilities(let request, let caps):
            out.appendLE(UInt32(request ? 1 : 0))
            out.appendLE(caps.rawValue)
        case .clipboardGrab(let s, let serial, let types):
            selection(s)
            if peer.contains(.clipboardGrabSerial) { out.appendLE(serial ?? 0) }
            for t in types { out.appendLE(t.rawValue) }
        case .clipboardRequest(let s, let t):
            selection(s)
            out.appendLE(t.rawValue)
        case .clipboard(let s, let t, let data):
            selection(s)
            out.appendLE(t.rawValue)
            out += data
        case .clipboardRelease(let s):
            selection(s)
        case .clientDisconnected:
            break
        case .maxClipboard(let max):
            out.appendLE(UInt32(bitPattern: max))
        case .reply(let type, let error):
            out.appendLE(type)
            out.appendLE(error)
        case .monitorsConfig(let config):
            out.appendLE(UInt32(config.monitors.count))
            out.appendLE(config.flags)
            for m in config.monitors {
                out.appendLE(m.height)
                out.appendLE(m.width)
                out.appendLE(m.depth)
                out.appendLE(UInt32(bitPattern: m.x))
                out.appendLE(UInt32(bitPattern: m.y))
            }
            if config.flags & VDAgentMonitorsConfig.physicalSize != 0 {
                for p in config.physicalSizes {
                    out.appendLE(p.heightMM)
                    out.appendLE(p.widthMM)
                }
            }
        case .mouseState(let x, let y, let buttons, let display):
            out.appendLE(x)
            out.appendLE(y)
            out.appendLE(buttons)
            out.append(display)
        case .other(_, let payload):
            out = payload
        }
        return out
    }

    public static func decode(_ type: VDAgentMessageType, _ payload: ArraySlice<UInt8>, peer: VDAgentCapabilities)
        throws(VDAgentError) -> VDAgentMessage
    {
        let r = LEReader(payload)
        let n = payload.count
        func need(_ count: Int) throws(VDAgentError) {
            if n < count { throw .truncated(type, needed: count, got: n) }
        }
        /// The selection prefix, if the peer uses one; returns the offset after it.
        func selection(shortPrefixAllowed: Bool = false) throws(VDAgentError) -> (VDAgentSelection, Int) {
            guard peer.contains(.clipboardSelection) else { return (.clipboard, 0) }
            // spice-vdagentd's own RELEASE carries a 1-byte prefix: accept it there only.
            try need(shortPrefixAllowed ? 1 : 4)
            guard let s = VDAgentSelection(rawValue: r.u8(0)!) else {
                throw .badValue(field: "selection", value: UInt32(r.u8(0)!))
            }
            return (s, min(4, n))
        }
        func clipboardType(_ o: Int) throws(VDAgentError) -> VDAgentClipboardType {
            try need(o + 4)
            let raw = r.u32(o)!
            guard let t = VDAgentClipboardType(rawValue: raw) else { throw .badValue(field: "clipboard type", value: raw) }
            return t
        }
        switch type {
        case .announceCapabilities:
            try need(8)
            return .announceCapabilities(request: r.u32(0)! != 0, VDAgentCapabilities(rawValue: r.u32(4)!))
        case .clipboardGrab:
            let (s, o0) = try selection()
            var o = o0
            var serial: UInt32?
            if peer.contains(.clipboardGrabSerial) {
                try need(o + 4)
                serial = r.u32(o)
                o += 4
            }
            // A torn type list means the sender and we disagree on the layout.
            if (n - o) % 4 != 0 { throw .truncated(type, needed: o + (n - o + 3) / 4 * 4, got: n) }
            var types: [VDAgentClipboardType] = []
            while o + 4 <= n {
                // Types we do not know are skipped, as spice-vdagent skips them.
                if let t = VDAgentClipboardType(rawValue: r.u32(o)!) { types.append(t) }
                o += 4
            }
            return .clipboardGrab(s, serial: serial, types: types)
        case .clipboardRequest:
            let (s, o) = try selection()
            return .clipboardRequest(s, try clipboardType(o))
        case .clipboard:
            let (s, o) = try selection()
            let t = try clipboardType(o)
            return .clipboard(s, t, Array(payload.dropFirst(o + 4)))
        case .clipboardRelease:
            if peer.contains(.clipboardSelection) && n == 0 { return .clipboardRelease(.clipboard) }
            return .clipboardRelease(try selection(shortPrefixAllowed: true).0)
        case .clientDisconnected:
            return .clientDisconnected
        case .maxClipboard:
            try need(4)
            return .maxClipboard(Int32(bitPattern: r.u32(0)!))
        case .reply:
            try need(8)
            return .reply(type: r.u32(0)!, error: r.u32(4)!)
        case .monitorsConfig:
            try need(8)
            let count = Int(r.u32(0)!)
            let flags = r.u32(4)!
            guard count <= 64 else { throw .badValue(field: "monitor count", value: UInt32(count)) }
            try need(8 + count * 20)
            var monitors: [VDAgentMonitorsConfig.Monitor] = []
            for i in 0..<count {
                let o = 8 + i * 20
                monitors.append(.init(width: r.u32(o + 4)!, height: r.u32(o)!, depth: r.u32(o + 8)!,
                                      x: Int32(bitPattern: r.u32(o + 12)!), y: Int32(bitPattern: r.u32(o + 16)!)))
            }
            // Accept both forms: with the physical sizes spice-gtk appends, and without.
            var sizes: [(widthMM: UInt16, heightMM: UInt16)] = []
            let mmStart = 8 + count * 20
            if flags & VDAgentMonitorsConfig.physicalSize != 0 && n >= mmStart + count * 4 {
                for i in 0..<count {
                    sizes.append((widthMM: r.u16(mmStart + i * 4 + 2)!, heightMM: r.u16(mmStart + i * 4)!))
                }
            }
            return .monitorsConfig(VDAgentMonitorsConfig(
                flags: sizes.isEmpty ? flags & ~VDAgentMonitorsConfig.physicalSize : flags,
                monitors: monitors, physicalSizes: sizes))
        case .mouseState:
            try need(13)
            return .mouseState(x: r.u32(0)!, y: r.u32(4)!, buttons: r.u32(8)!, display: r.u8(12)!)
        case .displayConfig, .fileXferStart, .fileXferStatus, .fileXferData, .audioVolumeSync, .graphicsDeviceInfo:
            return .other(type, Array(payload))
        }
    }
}
