import AgentProtocol
import Foundation
import Testing

/// The guest-agent binary as a process, over the same byte stream a host sees.
@Suite(.serialized) final class GuestAgentProcessTests {
    let agent: AgentProcess

    init() throws { agent = try AgentProcess() }
    deinit { agent.stop() }

    @Test func syncDelimitedThenCommandIsTheExactProxmoxFraming() throws {
        let c = try agent.connect()
        // Proxmox writes both requests at once and parses with a regex (protocols.md §0 finding 2).
        c.send("{\"execute\":\"guest-sync-delimited\",\"arguments\":{\"id\":1234}}\n{\"execute\":\"guest-ping\",\"arguments\":{}}\n")
        let lines = try c.readLines(2)
        #expect(lines[0] == [0xFF] + Array(#"{"return": 1234}"#.utf8))
        #expect(lines[1] == Array(#"{"return": {}}"#.utf8))
    }

    @Test func guestInfoListsItsCommands() throws {
        let c = try agent.connect()
        c.send(#"{"execute":"guest-info","id":"i1"}"#)
        let reply = try JSONParser.parse(c.readLineText())
        #expect(reply["id"] == .string("i1"))
        let names = reply["return"]?["supported_commands"]?.arrayValue?.compactMap { $0["name"]?.stringValue } ?? []
        for name in ["guest-sync", "guest-sync-delimited", "guest-ping", "guest-info", "guest-shutdown"] {
            #expect(names.contains(name))
        }
        let shutdown = reply["return"]?["supported_commands"]?.arrayValue?.first { $0["name"] == .string("guest-shutdown") }
        #expect(shutdown?["success-response"] == .bool(false))
    }

    @Test func fragmentsGarbageAndDelimiterDoNotStopIt() throws {
        let c = try agent.connect()
        for byte in Array(#"{"execute":"guest-ping","id":1}"#.utf8) { c.send([byte]) }
        #expect(try c.readLineText() == #"{"return": {}, "id": 1}"#)
        c.send(Array("{\"execute\":\"gue".utf8) + [0xFF] + Array("nonsense\n{\"execute\":\"guest-ping\",\"id\":2}".utf8))
        let lines = try c.readLines(3).map { String(decoding: $0, as: UTF8.self) }
        #expect(lines[0].contains("GenericError"))
        #expect(lines[1].contains("GenericError"))
        #expect(lines[2] == #"{"return": {}, "id": 2}"#)
    }

    @Test func errorsHaveQemuGaClasses() throws {
        let c = try agent.connect()
        c.send(#"{"execute":"guest-nothing"}{"execute":"guest-sync"}{"execute":"guest-ping","arguments":{"x":1}}"#)
        let replies = try c.readLines(3).map { try JSONParser.parse($0) }
        #expect(replies[0]["error"]?["class"] == .string("CommandNotFound"))
        #expect(replies[1]["error"]?["desc"] == .string("Parameter 'id' is missing"))
        #expect(replies[2]["error"]?["desc"] == .string("Parameter 'x' is unexpected"))
    }

    @Test func oversizedRequestIsRefusedAndTheAgentKeepsServing() throws {
        let c = try agent.connect()
        // 65 MiB in one string: over the 64 MiB limit qemu-ga also applies.
        var big = Array(#"{"execute":"guest-ping","arguments":{"pad":""#.utf8)
        big += [UInt8](repeating: 0x61, count: 65 << 20)
        big += Array("\"}}\n{\"execute\":\"guest-ping\",\"id\":3}".utf8)
        c.send(big)
        let lines = try c.readLines(2, timeout: 60).map { String(decoding: $0, as: UTF8.self) }
        #expect(lines[0].contains("larger than"))
        #expect(lines[1] == #"{"return": {}, "id": 3}"#)
    }

    @Test func hostDisconnectingMidMessageLosesNothingForTheNextHost() throws {
        do {
            let first = try agent.connect()
            first.send(#"{"execute":"guest-pi"#)
        }
        let second = try agent.connect()
        second.send(#"{"execute":"guest-ping","id":4}"#)
        #expect(try second.readLineText() == #"{"return": {}, "id": 4}"#)
    }

    @Test func shutdownWithABadModeAnswersAnError() throws {
        let c = try agent.connect()
        c.send(#"{"execute":"guest-shutdown","arguments":{"mode":"explode"}}"#)
        #expect(try c.readLineText().contains("mode is invalid"))
    }
}
