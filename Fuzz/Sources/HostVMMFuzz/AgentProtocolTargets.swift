import AgentProtocol

/// What the guest agent reads from the host (QGA), what the host reads from the
/// guest's SPICE agent and from SPICE clients (VDAgent), what the agent reads
/// from the session bus (D-Bus), and what the control socket reads from local users.
enum AgentProtocolTargets {
    static let all: [FuzzTarget] = [
        FuzzTarget(name: "json", run: json),
        FuzzTarget(name: "qga-framer", run: qgaFramer),
        FuzzTarget(name: "control-framer", run: controlFramer),
        FuzzTarget(name: "vdagent-reader", run: vdagentReader),
        FuzzTarget(name: "guest-stream-filter", run: guestStreamFilter),
        FuzzTarget(name: "monitors-config-rewriter", run: monitorsConfigRewriter),
        FuzzTarget(name: "dbus-message", run: dbusMessage),
    ]

    /// A parsed value written back out parses to the same value.
    static func json(_ input: [UInt8]) {
        guard let value = try? JSONParser.parse(input, maxDepth: 64) else { return }
        let written = JSONWriter.encode(value)
        let again: JSONValue
        do { again = try JSONParser.parse(written, maxDepth: 64) } catch {
            fatalError("invariant broken: our own output does not parse: \(error) in \(String(decoding: written, as: UTF8.self))")
        }
        require(again == value, "round trip changed \(value) into \(again)")
    }

    /// The same bytes give the same requests and errors however reads split them,
    /// and nothing more than the limit is ever held.
    static func framerSplitInvariance(_ input: [UInt8], maxRequestBytes: Int) {
        var reader = FuzzReader(input)
        let seed = reader.u8()
        let stream = reader.rest()
        let (expected, _) = sameHoweverRead(stream, seed: seed, { QGAInputFramer(maxRequestBytes: maxRequestBytes, maxDepth: 64) },
                                            { $0.feed($1) }) { framer in
            require(framer.pendingByteCount <= maxRequestBytes, "holds \(framer.pendingByteCount) bytes, limit \(maxRequestBytes)")
        }
        for case .value(let v) in expected {
            // What the agent and the control socket do next with each value.
            if case .success(let request) = QGARequest.decode(v) {
                _ = request.encode()
            }
        }
    }

    static func qgaFramer(_ input: [UInt8]) {
        framerSplitInvariance(input, maxRequestBytes: 4096)
    }

    /// The control socket's framer (1 MiB per request in hostvmm; smaller here so
    /// the fuzzer reaches the limit) and its request decoding.
    static func controlFramer(_ input: [UInt8]) {
        framerSplitInvariance(input, maxRequestBytes: 256)
    }

    /// Reassembly never returns more than the limit, and read boundaries do not matter.
    static func vdagentReader(_ input: [UInt8]) {
        var reader = FuzzReader(input)
        let seed = reader.u8()
        let capabilities = VDAgentCapabilities(rawValue: UInt32(reader.u8()) | UInt32(reader.u8()) << 8)
        let stream = reader.rest()
        let limit = 1024
        let (expected, _) = sameHoweverRead(stream, seed: seed, { VDAgentReader(maxMessageSize: limit) }, { $0.feed($1) })
        for case .message(_, let type, let payload) in expected {
            require(payload.count <= limit, "a \(payload.count)-byte message passed a \(limit)-byte limit")
            // Each message is then decoded for the peer's capabilities.
            _ = try? VDAgentCodec.decode(type, payload[...], peer: capabilities)
        }
    }

    /// The filter passes on no more than it was given plus nothing invented, and
    /// read boundaries do not change what passes.
    static func guestStreamFilter(_ input: [UInt8]) {
        var reader = FuzzReader(input)
        let seed = reader.u8()
        let stream = reader.rest()
        var whole = GuestStreamFilter()
        let expected = whole.feed(stream)
        var split = GuestStreamFilter()
        var passed: [UInt8] = []
        var notices: [[UInt8]] = []
        for piece in pieces(stream, seed: seed) {
            let out = split.feed(piece)
            passed += out.passThrough
            notices += out.notices
        }
        require(passed == expected.passThrough, "split reads passed \(passed.count) bytes, one read \(expected.passThrough.count)")
        require(notices == expected.notices, "split reads gave \(notices.count) notices, one read \(expected.notices.count)")
        let noticeBytes = notices.reduce(0) { $0 + $1.count }
        require(passed.count + noticeBytes <= stream.count, "\(passed.count + noticeBytes) bytes out of \(stream.count) in")
    }

    /// Rewriting only ever removes bytes, leaves the stream alone when it rewrote
    /// nothing, and does not depend on read boundaries.
    static func monitorsConfigRewriter(_ input: [UInt8]) {
        var reader = FuzzReader(input)
        let seed = reader.u8()
        let stream = reader.rest()
        let (expected, whole) = sameHoweverRead(stream, seed: seed, { MonitorsConfigRewriter() }, { $0.feed($1) })
        require(expected.count <= stream.count, "grew \(stream.count) bytes to \(expected.count)")
        if whole.rewritten == 0 {
            // A held, incomplete tail is the only difference allowed.
            require(Array(stream.prefix(expected.count)) == expected, "changed a stream it did not rewrite")
        }
    }

    /// A decoded message encodes to bytes that decode to a message with the same
    /// encoding (bytes, not ==: a double may be NaN, which the bus allows).
    static func dbusMessage(_ input: [UInt8]) {
        guard let (message, consumed) = try? DBusMessage.decode(input[...]) else { return }
        require(consumed > 0 && consumed <= input.count, "consumed \(consumed) of \(input.count) bytes")
        let encoded = message.encode()
        guard let (again, used) = try? DBusMessage.decode(encoded[...]) else {
            fatalError("invariant broken: our encoding of a decoded message does not decode")
        }
        require(used == encoded.count, "re-decoding used \(used) of \(encoded.count) bytes")
        require(again.encode() == encoded, "round trip changed the message")
    }
}
