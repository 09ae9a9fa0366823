import Testing
@testable import AgentProtocol

@Suite struct QGAInputFramerTests {
    private func values(_ outputs: [QGAInputFramer.Output]) -> [JSONValue] {
        outputs.compactMap { if case .value(let v) = $0 { return v } else { return nil } }
    }

    private func errors(_ outputs: [QGAInputFramer.Output]) -> [QGAError] {
        outputs.compactMap {
            switch $0 {
            case .error(let e), .resynchronise(let e): return e
            case .value: return nil
            }
        }
    }

    private let stream = Array(#"{"execute":"guest-ping"}{"execute":"guest-sync","arguments":{"id":5}}"#.utf8)
        + Array("\n  {\"execute\":\"x\",\"arguments\":{\"s\":\"}{\\\"\"}}\n".utf8)

    @Test func sameRequestsWhetherFedAtOnceOrByteByByte() {
        var whole = QGAInputFramer()
        let all = whole.feed(stream)
        var split = QGAInputFramer()
        var byByte: [QGAInputFramer.Output] = []
        for b in stream { byByte += split.feed([b]) }
        #expect(all == byByte)
        #expect(values(all).count == 3)
        #expect(values(all)[2]["arguments"]?["s"] == .string("}{\""))
        #expect(errors(all).isEmpty)
    }

    @Test func delimiterDropsHalfReadRequestAndIsAnsweredOnce() {
        var f = QGAInputFramer()
        var out = f.feed(Array(#"{"execute":"guest-pi"#.utf8))
        #expect(out.isEmpty)
        #expect(f.pendingByteCount > 0)
        out = f.feed([0xFF] + Array(#"{"execute":"guest-ping"}"#.utf8))
        #expect(errors(out).count == 1)
        #expect(out.first == .resynchronise(.generic("JSON parse error, stray '\u{FFFD}'")))
        #expect(values(out) == [["execute": "guest-ping"]])
    }

    @Test func garbageIsAnsweredAndTheStreamRecovers() {
        var f = QGAInputFramer()
        let out = f.feed(Array("hello }\n{\"execute\":\"guest-ping\"}\n".utf8))
        #expect(errors(out).count == 2)
        #expect(values(out) == [["execute": "guest-ping"]])
    }

    @Test func oversizedRequestCostsOneErrorThenRecoversAtNewline() {
        var f = QGAInputFramer(maxRequestBytes: 64)
        let big = "{\"execute\":\"" + String(repeating: "a", count: 500) + "\"}\n"
        let out = f.feed(Array((big + "{\"execute\":\"guest-ping\"}").utf8))
        #expect(errors(out).count == 1)
        #expect(values(out) == [["execute": "guest-ping"]])
    }

    @Test func deepNestingIsRefusedWithoutRecursing() {
        var f = QGAInputFramer()
        let deep = String(repeating: "[", count: 100_000) + "\n{\"execute\":\"guest-ping\"}"
        let out = f.feed(Array(deep.utf8))
        #expect(errors(out).count == 1)
        #expect(values(out) == [["execute": "guest-ping"]])
    }

    @Test func controlCharacterInsideStringBreaksOnlyThatRequest() {
        var f = QGAInputFramer()
        let out = f.feed(Array("{\"execute\":\"a\u{1}b\"}{\"x\":1}\n{\"execute\":\"guest-ping\"}".utf8))
        #expect(errors(out).count == 1)
        #expect(values(out) == [["execute": "guest-ping"]])
    }

    @Test func resetForgetsPartialInput() {
        var f = QGAInputFramer()
        _ = f.feed(Array(#"{"execute":"#.utf8))
        f.reset()
        #expect(values(f.feed(Array(#"{"execute":"guest-ping"}"#.utf8))) == [["execute": "guest-ping"]])
    }
}

@Suite struct QGARequestTests {
    @Test func decodesAValidRequest() throws {
        let r = try QGARequest.decode(["execute": "guest-sync", "arguments": ["id": 3], "id": "q"]).get()
        #expect(r.execute == "guest-sync")
        #expect(r.arguments["id"] == .int(3))
        #expect(r.id == .string("q"))
    }

    static let badEnvelopes: [(JSONValue, String)] = [
        (.array([]), "QMP input must be a JSON object"),
        (["arguments": [:]], "QMP input lacks member 'execute'"),
        (["execute": 1], "QMP input member 'execute' must be a string"),
        (["execute": "x", "arguments": []], "QMP input member 'arguments' must be an object"),
        (["execute": "x", "foo": 1], "QMP input member 'foo' is unexpected"),
    ]

    @Test(arguments: badEnvelopes)
    func refusesBadEnvelopes(value: JSONValue, desc: String) {
        guard case .failure(let e) = QGARequest.decode(value) else {
            Issue.record("accepted \(value)")
            return
        }
        #expect(e.error.desc == desc)
        #expect(e.error.errorClass == .genericError)
    }

    @Test func badEnvelopeStillEchoesID() {
        guard case .failure(let e) = QGARequest.decode(["id": 7, "foo": 1]) else {
            Issue.record("accepted")
            return
        }
        #expect(e.id == .int(7))
    }
}

@Suite struct QGAReplyTests {
    @Test func syncDelimitedReplyStartsWithFFAndEndsWithLF() {
        let bytes = QGAReply.success(.int(42), id: nil).encode(delimited: true)
        #expect(bytes == [0xFF] + Array(#"{"return": 42}"#.utf8) + [0x0A])
    }

    @Test func errorReplyHasClassAndDesc() {
        let bytes = QGAReply.failure(.commandNotFound("x"), id: .int(1)).encode()
        #expect(String(decoding: bytes, as: UTF8.self)
            == #"{"error": {"class": "CommandNotFound", "desc": "The command x has not been found"}, "id": 1}"# + "\n")
    }

    @Test func decodesRepliesIncludingUnknownClasses() throws {
        #expect(QGAReply.decode(try JSONParser.parse(#"{"return":{}}"#)) == .success(.object([:]), id: nil))
        let e = QGAReply.decode(try JSONParser.parse(#"{"error":{"class":"Unsupported","desc":"d"}}"#))
        #expect(e == .failure(QGAError(QGAErrorClass(rawValue: "Unsupported"), "d"), id: nil))
    }
}

@Suite struct QGAArgumentsTests {
    @Test func validatesLikeQAPI() throws {
        var a = QGAArguments(["id": "x"])
        #expect(throws: QGAError.invalidParameterType("id", expected: "integer")) { _ = try a.int("id") }
        var b = QGAArguments([:])
        #expect(throws: QGAError.missingParameter("id")) { _ = try b.int("id") }
        var c = QGAArguments(["id": 1, "extra": true])
        #expect(try c.int("id") == 1)
        #expect(throws: QGAError.unexpectedParameter("extra")) { try c.finish() }
    }
}

@Suite struct LineFramerTests {
    @Test func splitsLinesAndDropsCR() {
        var f = LineFramer()
        #expect(f.feed(Array("a\r\nb\nc".utf8)) == [.line(Array("a".utf8)), .line(Array("b".utf8))])
        #expect(f.feed(Array("\n".utf8)) == [.line(Array("c".utf8))])
    }

    @Test func delimiterResetsPartialLine() {
        var f = LineFramer(delimiterResets: true)
        #expect(f.feed(Array("junk".utf8) + [0xFF] + Array("{}\n".utf8)) == [.delimiter, .line(Array("{}".utf8))])
    }

    @Test func oversizedLineIsReportedOnceAndSkipped() {
        var f = LineFramer(maxLineBytes: 4)
        #expect(f.feed(Array("123456789\nok\n".utf8)) == [.oversized(9), .line(Array("ok".utf8))])
    }
}
