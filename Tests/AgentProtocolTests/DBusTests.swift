import Testing
@testable import AgentProtocol

@Suite struct DBusMessageTests {
    private func bytes(_ hex: String) -> [UInt8] {
        var out: [UInt8] = []
        var i = hex.startIndex
        while i < hex.endIndex {
            let j = hex.index(i, offsetBy: 2)
            out.append(UInt8(hex[i..<j], radix: 16)!)
            i = j
        }
        return out
    }

    /// Made by GLib's GDBusMessage (to_blob, little-endian): LockSession("2").
    let glibLockSession = "6c01000106000000070000008400000001016f00170000002f6f72672f667265656465736b746f702f6c6f67696e3100020173001e0000006f72672e667265656465736b746f702e6c6f67696e312e4d616e61676572000006017300160000006f72672e667265656465736b746f702e6c6f67696e3100000801670001730000030173000b0000004c6f636b53657373696f6e0000000000010000003200"
    /// GLib's reply with a(susso), what ListSessions returns.
    let glibListSessionsReply = "6c0201019b000000090000001800000008016700086128737573736f290000000501750007000000930000000000000001000000320000000000000004000000726f6f7400000000050000007365617430000000230000002f6f72672f667265656465736b746f702f6c6f67696e312f73657373696f6e2f5f333200000000000200000063310000e803000003000000616e6e000000000000000000220000002f6f72672f667265656465736b746f702f6c6f67696e312f73657373696f6e2f633100"

    let sessions = DBusValue.array(elementSignature: "(susso)", [
        .structure([.string("2"), .uint32(0), .string("root"), .string("seat0"),
                    .objectPath("/org/freedesktop/login1/session/_32")]),
        .structure([.string("c1"), .uint32(1000), .string("ann"), .string(""),
                    .objectPath("/org/freedesktop/login1/session/c1")]),
    ])

    @Test func decodesWhatGLibWrites() throws {
        let call = try #require(try DBusMessage.decode(bytes(glibLockSession)[...]))
        #expect(call.consumed == bytes(glibLockSession).count)
        #expect(call.0 == .methodCall(serial: 7, destination: "org.freedesktop.login1", path: "/org/freedesktop/login1",
                                      interface: "org.freedesktop.login1.Manager", member: "LockSession", [.string("2")]))
        let reply = try #require(try DBusMessage.decode(bytes(glibListSessionsReply)[...])).0
        #expect(reply.kind == .methodReturn)
        #expect(reply.replySerial == 7)
        #expect(reply.body == [sessions])
    }

    /// QEMU's Console.SetUIInfo(qqiiuu) without a destination (peer to peer), as GLib writes it:
    /// 16-bit values align to 2, so the body is 20 bytes.
    @Test func sixteenBitValuesAndNoDestination() throws {
        let glibSetUIInfo = "6c01000114000000050000007200000001016f001c0000002f6f72672f71656d752f446973706c6179312f436f6e736f6c655f300000000002017300190000006f72672e71656d752e446973706c6179312e436f6e736f6c65000000000000000801670006717169697575000000000003017300090000005365745549496e666f000000000000000a001400fdffffff040000000005000020030000"
        let call = DBusMessage.methodCall(serial: 5, destination: nil, path: "/org/qemu/Display1/Console_0",
                                          interface: "org.qemu.Display1.Console", member: "SetUIInfo",
                                          [.uint16(10), .uint16(20), .int32(-3), .int32(4), .uint32(1280), .uint32(800)])
        let glib = bytes(glibSetUIInfo)
        #expect(try DBusMessage.decode(glib[...])?.0 == call)
        let ours = call.encode()
        #expect(Array(ours.suffix(20)) == Array(glib.suffix(20)), "the body")
        #expect(try DBusMessage.decode(ours[...])?.0 == call)
    }

    @Test func roundTripsAndWaitsForTheWholeMessage() throws {
        var reply = DBusMessage(kind: .methodReturn, serial: 3, body: [sessions, .variant(.boolean(true)), .uint64(1 << 40)])
        reply.replySerial = 2
        let encoded = reply.encode()
        #expect(try DBusMessage.decode(encoded[...])?.0 == reply)
        #expect(try DBusMessage.decode(encoded.dropLast()[...]) == nil)
        #expect(try DBusMessage.decode((encoded + [0x6c])[...])?.consumed == encoded.count)
    }

    @Test func hostileInputIsAnErrorNotACrash() {
        let good = bytes(glibListSessionsReply)
        // Big-endian, a bad version, an array length past the end, a 1 GiB body.
        var bigEndian = good
        bigEndian[0] = UInt8(ascii: "B")
        #expect(throws: DBusError.self) { try DBusMessage.decode(bigEndian[...]) }
        var version = good
        version[3] = 2
        #expect(throws: DBusError.self) { try DBusMessage.decode(version[...]) }
        var huge = good
        huge[4...7] = [0, 0, 0, 0x40]
        #expect(throws: DBusError.tooLarge(0x4000_0000 + 40)) { try DBusMessage.decode(huge[...]) }
        var longArray = good
        // The body's array length (first body word) claims more than the body holds.
        let bodyStart = good.count - 0x9b
        longArray[bodyStart..<bodyStart + 4] = [0xff, 0xff, 0, 0]
        #expect(throws: DBusError.self) { try DBusMessage.decode(longArray[...]) }
        // Every truncation of a whole message is either "not yet" or an error.
        for n in 0..<good.count {
            #expect((try? DBusMessage.decode(good.prefix(n))) ?? nil == nil)
        }
    }

    /// Found by the dbus-message fuzz target: a body signature with an array of empty
    /// structures ("a()") made the decoder append elements that take no bytes until it
    /// had used 2 GB. Empty structures are refused, and so is any array element that
    /// does not advance.
    @Test func anArrayOfElementsThatTakeNoBytesIsAnError() {
        let hex =
        "6c0100010a000000473000008f00000081016f00240000002f6f526727667265654465736b746f702f6c6b01026e312f" +
        "7365736e2f6175746f000000002828282828282828282828282828282828282828696f6e61282928282873696f6e2f61" +
        "76746f003f00000000000000000000000000000000000000000000000a000000070000008f00000081016f0024000000" +
        "2f6f52672f667265656465736b746f702f6c6b67696e322f7365736e2f6175746f0000000073696f6e2f6171746f0000" +
        "006c6f010000002e5352616e67656e000003017300040065736b74000000000000000000000000000000000000000000" +
        "00000000000000000000000000000067000801670000009000"
        let message = stride(from: 0, to: hex.count, by: 2).map { i -> UInt8 in
            let at = hex.index(hex.startIndex, offsetBy: i)
            return UInt8(hex[at..<hex.index(at, offsetBy: 2)], radix: 16)!
        }
        #expect(throws: DBusError.self) { try DBusMessage.decode(message[...]) }
    }

    @Test func externalAuthenticationLines() {
        #expect(DBusAuth.start(uid: 0) == [0] + Array("AUTH EXTERNAL 30\r\n".utf8))
        #expect(DBusAuth.start(uid: 1000) == [0] + Array("AUTH EXTERNAL 31303030\r\n".utf8))
        #expect(DBusAuth.parse("OK 1234abcd") == .ok(guid: "1234abcd"))
        #expect(DBusAuth.parse("REJECTED EXTERNAL") == .rejected("REJECTED EXTERNAL"))
        // Taken off a buffer: nothing until the LF, then the line without CR, the rest kept.
        var buffer = Array("OK 1234ab".utf8)
        #expect(DBusAuth.takeReply(from: &buffer) == nil && buffer.count == 9)
        buffer += Array("cd\r\nl\u{1}".utf8)
        #expect(DBusAuth.takeReply(from: &buffer) == .ok(guid: "1234abcd"))
        #expect(buffer == [0x6C, 0x01])
    }
}
