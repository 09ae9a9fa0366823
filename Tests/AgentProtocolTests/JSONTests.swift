import Testing
@testable import AgentProtocol

@Suite struct JSONParserTests {
    @Test func parsesEveryKindOfValue() throws {
        let v = try JSONParser.parse(#"{"a":1,"b":[true,false,null],"c":"x\ny","d":-2.5,"e":{}}"#)
        #expect(v["a"] == .int(1))
        #expect(v["b"] == .array([.bool(true), .bool(false), .null]))
        #expect(v["c"] == .string("x\ny"))
        #expect(v["d"] == .double(-2.5))
        #expect(v["e"] == .object([:]))
    }

    @Test func integersFollowQEMU() throws {
        #expect(try JSONParser.parse("9223372036854775807") == .int(Int64.max))
        #expect(try JSONParser.parse("18446744073709551615") == .uint(UInt64.max))
        #expect(try JSONParser.parse("18446744073709551616") == .double(18446744073709551616))
        #expect(throws: JSONParseError.self) { try JSONParser.parse("1e999") }
    }

    @Test func acceptsQEMUExtensions() throws {
        #expect(try JSONParser.parse(#"{'execute':'guest-ping'}"#)["execute"] == .string("guest-ping"))
        #expect(try JSONParser.parse(#"'it\'s'"#) == .string("it's"))
    }

    @Test func decodesUnicodeEscapesAndSurrogates() throws {
        #expect(try JSONParser.parse(#""\u00e9\ud83d\ude00""#) == .string("é😀"))
        #expect(throws: JSONParseError.self) { try JSONParser.parse(#""\ud83d""#) }
        #expect(throws: JSONParseError.self) { try JSONParser.parse(#""\ude00""#) }
    }

    @Test func rejectsMalformedInput() {
        for text in ["{", "[1,]", #"{"a" 1}"#, "nul", "01", "-", "1.", #""abc"#, "{\"a\":1}x", "tru e", #"{1:2}"#] {
            #expect(throws: JSONParseError.self, "\(text)") { try JSONParser.parse(text) }
        }
    }

    @Test func rejectsInvalidUTF8AndRawControlCharacters() {
        #expect(throws: JSONParseError.self) { try JSONParser.parse([0x22, 0xC3, 0x28, 0x22]) }
        #expect(throws: JSONParseError.self) { try JSONParser.parse([0x22, 0x01, 0x22]) }
    }

    @Test func limitsNesting() throws {
        let ok = String(repeating: "[", count: 1024) + String(repeating: "]", count: 1024)
        _ = try JSONParser.parse(ok)
        let deep = String(repeating: "[", count: 1025) + String(repeating: "]", count: 1025)
        #expect(throws: JSONParseError.self) { try JSONParser.parse(deep) }
    }

    @Test func laterDuplicateKeyWins() throws {
        #expect(try JSONParser.parse(#"{"a":1,"a":2}"#) == .object(["a": .int(2)]))
    }
}

@Suite struct JSONWriterTests {
    @Test func writesQEMUStyleASCII() {
        let v: JSONValue = ["s": "é\n\"\u{1}", "n": 3, "a": [true, nil]]
        let text = JSONWriter.string(v)
        // qemu-ga's layout: ": " and ", " separators, upper-case hex escapes.
        #expect(text == #"{"s": "\u00E9\n\"\u0001", "n": 3, "a": [true, null]}"#)
        #expect(JSONWriter.encode(v).allSatisfy { $0 < 0x80 && $0 != 0x0A })
    }

    @Test func writesAstralCharactersAsSurrogatePairs() {
        #expect(JSONWriter.string("😀") == #""\uD83D\uDE00""#)
    }

    @Test func roundTrips() throws {
        let v: JSONValue = ["x": [1, -2, 2.5, "y", ["z": nil]], "big": .uint(UInt64.max), "t": true]
        #expect(try JSONParser.parse(JSONWriter.encode(v)) == v)
    }

    @Test func nonFiniteDoublesBecomeNull() {
        #expect(JSONWriter.string(.double(.infinity)) == "null")
    }
}
