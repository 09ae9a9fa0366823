import Testing
@testable import AgentProtocol

@Suite struct VDAgentCodecTests {
    /// What spice-gtk announces (protocols.md §3.5).
    let spiceGTK = VDAgentCapabilities(rawValue: 0x0003_5077)

    @Test func capabilitiesRoundTrip() throws {
        let payload = VDAgentCodec.encode(.announceCapabilities(request: true, spiceGTK), peer: [])
        #expect(payload == [1, 0, 0, 0, 0x77, 0x50, 0x03, 0x00])
        #expect(try VDAgentCodec.decode(.announceCapabilities, payload[...], peer: []) == .announceCapabilities(request: true, spiceGTK))
    }

    @Test func clipboardMessagesWithAndWithoutSelectionAndSerial() throws {
        let grab = VDAgentMessage.clipboardGrab(.primary, serial: 7, types: [.utf8Text, .imagePNG])
        let full = VDAgentCodec.encode(grab, peer: spiceGTK)
        #expect(full == [1, 0, 0, 0, 7, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0])
        #expect(try VDAgentCodec.decode(.clipboardGrab, full[...], peer: spiceGTK) == grab)
        // A peer without CLIPBOARD_SELECTION or GRAB_SERIAL: no prefix, no serial.
        let bare = VDAgentCodec.encode(grab, peer: [.clipboardByDemand])
        #expect(bare == [1, 0, 0, 0, 2, 0, 0, 0])
        #expect(try VDAgentCodec.decode(.clipboardGrab, bare[...], peer: [.clipboardByDemand])
            == .clipboardGrab(.clipboard, serial: nil, types: [.utf8Text, .imagePNG]))

        let data = VDAgentMessage.clipboard(.clipboard, .utf8Text, Array("héllo".utf8))
        let bytes = VDAgentCodec.encode(data, peer: spiceGTK)
        #expect(bytes.count == 4 + 4 + 6)
        #expect(try VDAgentCodec.decode(.clipboard, bytes[...], peer: spiceGTK) == data)
        #expect(try VDAgentCodec.decode(.clipboardRequest, [0, 0, 0, 0, 1, 0, 0, 0][...], peer: spiceGTK)
            == .clipboardRequest(.clipboard, .utf8Text))
        // spice-vdagentd's own RELEASE has a 1-byte prefix.
        #expect(try VDAgentCodec.decode(.clipboardRelease, [1][...], peer: spiceGTK) == .clipboardRelease(.primary))
    }

    @Test func malformedPayloadsAreErrorsNotCrashes() {
        #expect(throws: VDAgentError.self) { try VDAgentCodec.decode(.clipboardRequest, [0, 0][...], peer: spiceGTK) }
        #expect(throws: VDAgentError.self) { try VDAgentCodec.decode(.clipboard, [9, 0, 0, 0, 1, 0, 0, 0][...], peer: spiceGTK) }
        #expect(throws: VDAgentError.self) { try VDAgentCodec.decode(.announceCapabilities, [1][...], peer: []) }
        // A grab with a torn selection prefix or type list.
        #expect(throws: VDAgentError.self) { try VDAgentCodec.decode(.clipboardGrab, [1, 2][...], peer: spiceGTK) }
        #expect(throws: VDAgentError.self) {
            try VDAgentCodec.decode(.clipboardGrab, [0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1][...], peer: spiceGTK)
        }
        #expect(throws: VDAgentError.self) {
            try VDAgentCodec.decode(.monitorsConfig, [0xFF, 0xFF, 0, 0, 0, 0, 0, 0][...], peer: [])
        }
    }

    @Test func monitorsConfigAcceptsBothSizes() throws {
        let config = VDAgentMonitorsConfig(flags: VDAgentMonitorsConfig.physicalSize,
                                           monitors: [.init(width: 1280, height: 800)],
                                           physicalSizes: [(widthMM: 300, heightMM: 200)])
        let withMM = VDAgentCodec.encode(.monitorsConfig(config), peer: [])
        #expect(withMM.count == 8 + 20 + 4)
        #expect(try VDAgentCodec.decode(.monitorsConfig, withMM[...], peer: []) == .monitorsConfig(config))
        // What real spice-vdagentd accepts: exactly 8 + n*20 bytes, flag cleared.
        let stripped = VDAgentCodec.encode(.monitorsConfig(config.withoutPhysicalSize), peer: [])
        #expect(stripped.count == 8 + 20)
        #expect(LEReader(stripped[...]).u32(4) == 0)
    }
}

@Suite struct VDAgentStreamTests {
    private func stream(_ messages: [(VDAgentMessageType, [UInt8])], maxChunk: Int) -> [UInt8] {
        messages.flatMap { VDAgentWriter.chunks(VDAgentWriter.message($0.0, $0.1), port: .client, maxChunk: maxChunk) }
    }

    @Test func chunksTowardsTheGuestAreAtMost2048Bytes() {
        let big = [UInt8](repeating: 0x61, count: 5000)
        let bytes = VDAgentWriter.chunks(VDAgentWriter.message(.clipboard, big), port: .client, maxChunk: VDAgent.maxChunkToGuest)
        var offset = 0
        var sizes: [Int] = []
        while offset < bytes.count {
            let size = Int(LEReader(bytes[offset...]).u32(4)!)
            sizes.append(size)
            offset += 8 + size
        }
        #expect(sizes == [2048, 2048, 924])
    }

    @Test func reassemblesAcrossChunksAndByteByByte() {
        let big = (0..<70_000).map { UInt8(truncatingIfNeeded: $0) }
        let bytes = stream([(.clipboard, big), (.clientDisconnected, [])], maxChunk: 2048)
        var whole = VDAgentReader()
        let all = whole.feed(bytes)
        #expect(all == [.message(.client, .clipboard, big), .message(.client, .clientDisconnected, [])])
        var split = VDAgentReader()
        var outputs: [VDAgentReader.Output] = []
        for b in bytes { outputs += split.feed([b]) }
        #expect(outputs == all)
    }

    @Test func oversizeAndMalformedMessagesAreDroppedAndTheStreamStaysInSync() {
        var reader = VDAgentReader(maxMessageSize: 1000)
        var bytes = stream([(.clipboard, [UInt8](repeating: 1, count: 5000))], maxChunk: 2048)
        var bad = VDAgentWriter.message(.clipboard, [1, 2, 3])
        bad[0] = 9  // wrong protocol
        bytes += VDAgentWriter.chunks(bad, port: .client)
        bytes += VDAgentWriter.chunks(VDAgentWriter.message(.clipboard, [0, 0, 0, 0]), port: VDAgentPort.server)
        var unknown = VDAgentWriter.message(.clipboard, [])
        unknown[4] = 99  // unknown type
        bytes += VDAgentWriter.chunks(unknown, port: .client)
        bytes += [7, 0, 0, 0, 1, 0, 0, 0, 0xEE]  // a chunk for port 7
        bytes += stream([(.clipboardRelease, [0, 0, 0, 0])], maxChunk: 2048)
        let out = reader.feed(bytes)
        #expect(out == [
            .dropped(.oversize(declared: 5000, limit: 1000)),
            .dropped(.badProtocol(9)),
            .message(.server, .clipboard, [0, 0, 0, 0]),
            .dropped(.unknownType(99)),
            .dropped(.badPort(7)),
            .message(.client, .clipboardRelease, [0, 0, 0, 0]),
        ])
    }
}

    /// Found by the vdagent-reader fuzz target: after a message start with the wrong
    /// protocol, only the rest of that read was dropped, so the rest of a long chunk
    /// arriving in later reads was parsed as more message starts.
    @Test func aBadProtocolDropsTheRestOfItsChunkHoweverItIsRead() {
        var bad = VDAgentWriter.message(.clipboard, [UInt8](repeating: 0x9E, count: 40))
        bad[0] = 9  // wrong protocol; the payload would read as another bad header
        let stream = VDAgentWriter.chunks(bad, port: .client)
            + VDAgentWriter.chunks(VDAgentWriter.message(.clipboardRelease, [0, 0, 0, 0]), port: .client)
        for step in [1, 7, 20, stream.count] {
            var reader = VDAgentReader()
            var out: [VDAgentReader.Output] = []
            for at in stride(from: 0, to: stream.count, by: step) {
                out += reader.feed(Array(stream[at..<min(at + step, stream.count)]))
            }
            #expect(out == [.dropped(.badProtocol(9)), .message(.client, .clipboardRelease, [0, 0, 0, 0])], "step \(step)")
        }
    }

@Suite struct MonitorsConfigRewriterTests {
    /// What spice-gtk sends: PHYSICAL_SIZE set and a VDAgentMonitorMM per monitor.
    let fromSpiceGTK = VDAgentMonitorsConfig(
        flags: VDAgentMonitorsConfig.physicalSize | VDAgentMonitorsConfig.usePosition,
        monitors: [.init(width: 1280, height: 800), .init(width: 1024, height: 768, x: 1280)],
        physicalSizes: [(widthMM: 300, heightMM: 200), (widthMM: 280, heightMM: 210)])

    private func chunks(_ message: VDAgentMessage, port: VDAgentPort = .client) -> [UInt8] {
        VDAgentWriter.chunks(VDAgentWriter.message(message.type, VDAgentCodec.encode(message, peer: [])),
                             port: port, maxChunk: VDAgent.maxChunkToGuest)
    }

    @Test func stripsMillimetresSoSpiceVDAgentdAcceptsTheSize() throws {
        var rewriter = MonitorsConfigRewriter()
        let out = rewriter.feed(chunks(.monitorsConfig(fromSpiceGTK)))
        #expect(rewriter.rewritten == 1)
        // Exactly what spice-vdagentd 0.22.1 checks: 8 + n*20 bytes, flag bit 1 clear.
        #expect(out == chunks(.monitorsConfig(fromSpiceGTK.withoutPhysicalSize)))
        #expect(out.count == 8 + 20 + 8 + 2 * 20)
        var reader = VDAgentReader()
        guard case .message(_, .monitorsConfig, let payload) = reader.feed(out).first else {
            Issue.record("no message came out")
            return
        }
        #expect(try VDAgentCodec.decode(.monitorsConfig, payload[...], peer: [])
            == .monitorsConfig(fromSpiceGTK.withoutPhysicalSize))
    }

    @Test func everythingElsePassesThroughByteForByteHoweverItIsSplit() {
        // A clipboard payload that itself looks like a MONITORS_CONFIG chunk
        // must not be touched: it is inside a message, not at a message start.
        let decoy = chunks(.monitorsConfig(fromSpiceGTK))
        let big = decoy + (0..<9000).map { UInt8(truncatingIfNeeded: $0) }
        let bytes = chunks(.clipboard(.clipboard, .utf8Text, big))
            + chunks(.monitorsConfig(fromSpiceGTK.withoutPhysicalSize))
            + chunks(.clientDisconnected, port: .server)
            + [7, 0, 0, 0, 3, 0, 0, 0, 1, 2, 3]  // a malformed chunk: passed on for the agent to drop
            + chunks(.clipboardRelease(.primary))
        var whole = MonitorsConfigRewriter()
        #expect(whole.feed(bytes) == bytes)
        #expect(whole.rewritten == 0)
        var split = MonitorsConfigRewriter()
        var out: [UInt8] = []
        var i = 0
        var step = 1
        while i < bytes.count {
            let n = min(step, bytes.count - i)
            out += split.feed(Array(bytes[i..<i + n]))
            i += n
            step = step % 37 + 1
        }
        #expect(out == bytes)
    }

    @Test func aRewriteAfterAStreamedMessageAndByteByByte() {
        let bytes = chunks(.clipboard(.primary, .utf8Text, [UInt8](repeating: 0x41, count: 5000)))
            + chunks(.monitorsConfig(fromSpiceGTK))
        var rewriter = MonitorsConfigRewriter()
        var out: [UInt8] = []
        for b in bytes { out += rewriter.feed([b]) }
        #expect(rewriter.rewritten == 1)
        #expect(out == chunks(.clipboard(.primary, .utf8Text, [UInt8](repeating: 0x41, count: 5000)))
            + chunks(.monitorsConfig(fromSpiceGTK.withoutPhysicalSize)))
    }
}

@Suite struct VDAgentClientLeavesMidMessageTests {
    @Test func clientDisconnectedDiscardsTheClientsUnfinishedMessage() {
        var reader = VDAgentReader()
        // The client starts a 200 MiB message (over the limit: skipped) and vanishes after 2 KiB.
        var bytes = VDAgentWriter.chunks(
            Array(VDAgentWriter.message(.clipboard, []).prefix(16)) + [0, 0, 0x80, 0x0C] + [UInt8](repeating: 1, count: 2000),
            port: .client)
        bytes += VDAgentWriter.chunks(VDAgentWriter.message(.clientDisconnected, []), port: .server)
        // The next client's first message must come through whole.
        bytes += VDAgentWriter.chunks(VDAgentWriter.message(.clipboardRelease, [0, 0, 0, 0]), port: .client)
        #expect(reader.feed(bytes) == [
            .dropped(.oversize(declared: 200 << 20, limit: VDAgent.defaultMaxMessageSize)),
            .message(.server, .clientDisconnected, []),
            .message(.client, .clipboardRelease, [0, 0, 0, 0]),
        ])
    }
}

@Suite struct VDAgentReassemblyCostTests {
    /// Reassembly must be linear: 32 MiB arrives as 16 Ki chunks of 2 KiB. A
    /// copy of the partial payload per chunk (the bug this guards) moves about
    /// 270 GB and runs for minutes; linear work takes well under a second.
    /// The assertion is on the measured work, not on the test's wall time: in
    /// the full suite, parallel VM tests and builds can delay its start a lot (436 s
    /// once here, past 600 s another time: its time limit only catches a hang).
    @Test(.timeLimit(.minutes(30))) func thirtyTwoMiBInTwoKiBChunksIsLinear() {
        let size = 32 << 20
        let message = VDAgentWriter.message(.clipboard, [UInt8](repeating: 0x61, count: size))
        let stream = VDAgentWriter.chunks(message, port: .client, maxChunk: VDAgent.maxChunkToGuest)
        var reader = VDAgentReader()
        var outputs: [VDAgentReader.Output] = []
        let clock = ContinuousClock()
        let elapsed = clock.measure {
            var offset = 0
            while offset < stream.count {
                let n = min(4096, stream.count - offset)
                outputs += reader.feed(Array(stream[offset..<offset + n]))
                offset += n
            }
        }
        guard case .message(.client, .clipboard, let payload) = outputs.first else {
            Issue.record("no message: \(outputs.prefix(2))")
            return
        }
        #expect(payload.count == size)
        #expect(elapsed < .seconds(20), "reassembling 32 MiB took \(elapsed)")
    }
}

@Suite struct GuestStreamFilterTests {
    private func run(_ stream: [UInt8], step: Int) -> GuestStreamFilter.Output {
        var filter = GuestStreamFilter()
        var out = GuestStreamFilter.Output()
        var i = 0
        while i < stream.count {
            let n = min(step, stream.count - i)
            let o = filter.feed(Array(stream[i..<i + n]))
            out.passThrough += o.passThrough
            out.notices += o.notices
            out.dropped += o.dropped
            i += n
        }
        return out
    }

    @Test func noticesComeOutAndEverythingElsePassesInOrderHoweverSplit() {
        // Our agent writes a whole message in one chunk of any size.
        let clipboard = VDAgentWriter.chunks(
            VDAgentWriter.message(.clipboard, [1, 0, 0, 0] + [UInt8](repeating: 0x41, count: 100_000)), port: .client)
        // A message spanning chunks (as spice-vdagent may write it) passes too.
        let spanning = VDAgentWriter.chunks(
            VDAgentWriter.message(.clipboard, [1, 0, 0, 0] + [UInt8](repeating: 0x42, count: 5000)), port: .client, maxChunk: 2048)
        let serverOther = VDAgentWriter.chunks(VDAgentWriter.message(.reply, [2, 0, 0, 0, 0, 0, 0, 0]), port: .server)
        let notice = HostNotice.encode(json: Array(#"{"event": "guest-locked"}"#.utf8))
        let stream = clipboard + notice + serverOther + spanning + notice + clipboard
        for step in [1, 7, 2048, stream.count] {
            let out = run(stream, step: step)
            #expect(out.passThrough == clipboard + serverOther + spanning + clipboard, "step \(step)")
            #expect(out.notices == [Array(#"{"event": "guest-locked"}"#.utf8), Array(#"{"event": "guest-locked"}"#.utf8)])
            #expect(out.dropped.isEmpty)
        }
    }

    @Test func whatSpiceServerWouldDropTheAgentForIsTakenOut() {
        let good = VDAgentWriter.chunks(VDAgentWriter.message(.clipboardRelease, [0, 0, 0, 0]), port: .client)
        var badProtocol = VDAgentWriter.message(.clipboard, [0, 0, 0, 0, 1, 0, 0, 0])
        badProtocol[0] = 9
        let twoInOne = VDAgentWriter.message(.clipboardRelease, [0, 0, 0, 0]) + VDAgentWriter.message(.clipboardRelease, [1, 0, 0, 0])
        let stream = [7, 0, 0, 0, 3, 0, 0, 0, 1, 2, 3] + good
            + VDAgentWriter.chunks(badProtocol, port: .client) + good
            + [1, 0, 0, 0, 4, 0, 0, 0, 1, 0, 0, 0] + good
            + VDAgentWriter.chunks(twoInOne, port: .client) + good
            + VDAgentWriter.chunks(VDAgentWriter.message(.clipboardGrab, [1, 2]), port: .client) + good
        for step in [1, 5, stream.count] {
            let out = run(stream, step: step)
            #expect(out.passThrough == good + good + good + good + good, "step \(step)")
            #expect(out.dropped.count == 5, "\(out.dropped)")
        }
    }

    /// spice-server drops the agent for a continuation chunk longer than what its message
    /// has left ("data exceeds size from header"): such a chunk is taken out, and the
    /// message's real rest still passes.
    @Test func aContinuationLongerThanItsMessageIsTakenOut() {
        let message = VDAgentWriter.message(.clipboard, [1, 0, 0, 0] + [UInt8](repeating: 0x43, count: 2996))
        let first = Array(VDAgentWriter.chunks(Array(message[..<2048]), port: .client))
        let rest = Array(message[2048...])  // 972 bytes the message still has
        let tooLong = VDAgentWriter.chunks(rest + [UInt8](repeating: 0x44, count: 500), port: .client)
        let properRest = VDAgentWriter.chunks(rest, port: .client)
        let good = VDAgentWriter.chunks(VDAgentWriter.message(.clipboardRelease, [0, 0, 0, 0]), port: .client)
        let stream = first + tooLong + properRest + good
        for step in [1, 9, 2048, stream.count] {
            let out = run(stream, step: step)
            #expect(out.passThrough == first + properRest + good, "step \(step)")
            #expect(out.dropped == ["a 1472-byte chunk continuing a message with 972 bytes left"], "step \(step)")
        }
    }
}

@Suite struct VDAgentAudioVolumeTests {
    @Test func parsesTheUnalignedVolumesAndRefusesWhatDoesNotFit() {
        let v = VDAgentAudioVolume(payload: [1, 0, 2, 0x00, 0x80, 0xFF, 0xFF])
        #expect(v == VDAgentAudioVolume(isPlayback: true, mute: false, volumes: [32768, 65535]))
        #expect(v?.encoded == [1, 0, 2, 0x00, 0x80, 0xFF, 0xFF])
        #expect(VDAgentAudioVolume(payload: [0, 1, 1, 5, 0])?.mute == true)
        #expect(VDAgentAudioVolume(payload: [1, 0, 2, 0, 0x80]) == nil, "two channels declared, one present")
        #expect(VDAgentAudioVolume(payload: [1, 0, 0]) == nil, "no channels")
        #expect(VDAgentAudioVolume(payload: [1, 0]) == nil)
        #expect(VDAgentAudioVolume(payload: [1, 0, 200] + [UInt8](repeating: 0, count: 400)) == nil, "too many channels")
    }
}
