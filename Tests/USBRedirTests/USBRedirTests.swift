import Foundation
import Testing
import USBHost
@testable import USBRedir

/// Byte-level usbredir packets as the peers write them (usbredirproto.h).
enum Packets {
    static func le32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> ($0 * 8)) } }
    static func le16(_ v: UInt16) -> [UInt8] { [UInt8(v & 0xFF), UInt8(v >> 8)] }

    /// A hello (always the 12-byte header), capability word `caps`.
    static func hello(_ version: String, caps: UInt32 = 0xFF) -> [UInt8] {
        var body = Array(version.utf8.prefix(63))
        body += [UInt8](repeating: 0, count: 64 - body.count)
        body += le32(caps)
        return le32(0) + le32(UInt32(body.count)) + le32(0) + body
    }

    /// A packet after both hellos announced 64-bit ids (16-byte header).
    static func packet(_ type: UInt32, _ body: [UInt8], id: UInt64 = 0) -> [UInt8] {
        le32(type) + le32(UInt32(body.count)) + le32(UInt32(id & 0xFFFF_FFFF)) + le32(UInt32(id >> 32)) + body
    }

    static func interfaceInfo() -> [UInt8] {
        // u32 interface_count, then 32 each of interface, class, subclass, protocol (u8).
        var body = le32(1)
        for value: UInt8 in [0, 8, 6, 0x50] { body += [value] + [UInt8](repeating: 0, count: 31) }
        return packet(4, body)
    }

    static func deviceConnect(vid: UInt16, pid: UInt16, speed: UInt8 = 2) -> [UInt8] {
        packet(1, [speed, 0, 0, 0] + le16(vid) + le16(pid) + le16(0x0100))
    }
}

@Suite struct USBRedirObserverTests {
    @Test func reportsTheDeviceAndItsDepartureHoweverTheBytesAreSplit() {
        let qemu = Packets.hello("qemu usb-redir guest 10.0.2")
        let client = Packets.hello("usbredir test") + Packets.interfaceInfo() + Packets.deviceConnect(vid: 0x1d6b, pid: 0x0104)
            + Packets.packet(101, [UInt8](repeating: 0xAB, count: 70_000)) + Packets.packet(2, [])
        for chunk in [1, 7, 4096, client.count] {
            var observer = USBRedirObserver()
            var events = observer.feed(qemu, from: .fromQEMU)
            var at = 0
            while at < client.count {
                events += observer.feed(Array(client[at..<min(client.count, at + chunk)]), from: .fromDevice)
                at += chunk
            }
            let device = USBRedirDevice(speed: .high, deviceClass: 0, subclass: 0, deviceProtocol: 0, vendorID: 0x1d6b,
                                        productID: 0x0104, versionBCD: 0x0100)
            #expect(events.contains(.deviceConnected(device)), "chunk \(chunk): \(events)")
            #expect(events.last == .deviceDisconnected, "chunk \(chunk): \(events)")
            #expect(observer.headerLength == 16)
        }
    }

    @Test func anUnknownTypeEndsObservingOnly() {
        var observer = USBRedirObserver()
        _ = observer.feed(Packets.hello("q"), from: .fromQEMU)
        let events = observer.feed(Packets.hello("c") + Packets.packet(0x7FFF, [1, 2, 3]), from: .fromDevice)
        #expect(events.contains { if case .framingLost(.fromDevice, _) = $0 { return true } else { return false } })
        #expect(observer.feed(Packets.deviceConnect(vid: 1, pid: 2), from: .fromDevice).isEmpty)
    }
}

@Suite struct USBRedirStreamGuardTests {
    @Test func holdsThePeerUntilQEMUsHelloThenPassesAWellFormedStream() {
        let g = USBRedirStreamGuard()
        let early = Packets.hello("usbredir test")
        #expect(g.fromDevice(early) == .forward([], []))
        let (_, released) = g.fromQEMU(Packets.hello("qemu usb-redir guest 10.0.2"))
        guard case .forward(let releasedBytes, _) = released else {
            Issue.record("refused the peer's hello: \(released)")
            return
        }
        #expect(releasedBytes == early)
        let connect = Packets.interfaceInfo() + Packets.deviceConnect(vid: 0x1d6b, pid: 0x0104)
        guard case .forward(let bytes, let events) = g.fromDevice(connect) else {
            Issue.record("refused a well-formed stream: \(g.refusal ?? "")")
            return
        }
        #expect(bytes == connect)
        #expect(events.count == 1)
        // Half a bulk packet now, half later: not an error.
        // usb_redir_bulk_packet_header: endpoint, status, length, stream_id, length_high.
        let bulk = Packets.packet(101, [0x81, 0] + Packets.le16(4) + Packets.le32(0) + Packets.le16(0) + [1, 2, 3, 4])
        #expect(g.fromDevice(Array(bulk.prefix(9))) == .forward(Array(bulk.prefix(9)), []))
        #expect(g.fromDevice(Array(bulk.dropFirst(9))) == .forward(Array(bulk.dropFirst(9)), []))
    }

    @Test func refusesWhatQEMUsParserWouldChokeOn() {
        for (what, bad) in [
            ("an unknown type", Packets.packet(0x7FFF, [UInt8](repeating: 0, count: 16))),
            ("a device_connect of the wrong length", Packets.packet(1, [2, 0, 0])),
            ("a packet type only QEMU may send", Packets.packet(6, [1])),
            ("an absurd length", Packets.le32(101) + Packets.le32(0x7FFF_FF00) + Packets.le32(0) + Packets.le32(0)),
        ] {
            let g = USBRedirStreamGuard()
            _ = g.fromQEMU(Packets.hello("qemu"))
            _ = g.fromDevice(Packets.hello("peer"))
            guard case .refuse(let why) = g.fromDevice(bad + Packets.hello("more")) else {
                Issue.record("\(what) passed")
                continue
            }
            #expect(!why.isEmpty)
            // Once refused, always refused (the connection to QEMU is cut).
            #expect(g.fromDevice(Packets.hello("x")) != .forward(Packets.hello("x"), []))
        }
    }
}

@Suite struct USBRedirFilterTests {
    @Test func parsesBothSpellingsAndDecidesByTheFirstMatchingRule() throws {
        let f = try USBRedirFilter(parsing: "0x03,-1,-1,-1,0|-1,0x1d6b,-1,-1,1|-1:-1:-1:-1:0")
        #expect(f.rules.count == 3)
        #expect(f.qemuProperty == "0x3:-1:-1:-1:0|-1:0x1d6b:-1:-1:1|-1:-1:-1:-1:0")
        #expect(f.allows(vendorID: 0x1d6b, productID: 0x104, versionBCD: 0x100, classes: [0, 8]))
        #expect(!f.allows(vendorID: 0x1d6b, productID: 0x104, versionBCD: 0x100, classes: [3]))
        #expect(!f.allows(vendorID: 0x0781, productID: 0x5567, versionBCD: 0x100, classes: [8]))
        #expect(try USBRedirFilter(parsing: f.description) == f)
    }

    @Test func refusesMalformedRules() {
        for bad in ["", "1,2,3", "0x100,-1,-1,-1,1", "-1,-1,x,-1,1", "-1,0x10000,-1,-1,1"] {
            #expect(throws: USBRedirFilter.ParseError.self, "\(bad)") { try USBRedirFilter(parsing: bad) }
        }
    }
}

@Suite struct USBHostTests {
    @Test func selectorsAndRefusals() {
        #expect(USBDeviceSelector("0781:5567") == .ids(vendor: 0x0781, product: 0x5567))
        #expect(USBDeviceSelector("1-4") == .location(bus: 1, address: 4))
        #expect(USBDeviceSelector("nonsense") == nil)
        #expect(USBDeviceSelector("12345:1") == nil)
        let hub = USBHostDevice(bus: 1, address: 1, vendorID: 0x1d6b, productID: 2, deviceClass: 9)
        #expect(hub.attachRefusal?.contains("hub") == true)
        let keyboard = USBHostDevice(bus: 1, address: 3, vendorID: 0x046d, productID: 0xc31c, deviceClass: 0,
                                     interfaces: [.init(cls: 3, subclass: 1, proto: 1)])
        #expect(keyboard.attachRefusal?.contains("keyboard") == true)
        let stick = USBHostDevice(bus: 1, address: 4, vendorID: 0x0781, productID: 0x5567, deviceClass: 0,
                                  interfaces: [.init(cls: 8, subclass: 6, proto: 0x50)])
        #expect(stick.attachRefusal == nil)
        #expect(stick.matches(USBDeviceSelector.location(bus: 1, address: 4))
                && stick.matches(USBDeviceSelector.ids(vendor: 0x0781, product: 0x5567)))
    }

    /// This machine has no USB: libusb lists nothing, and that is not an error.
    @Test func listingWithoutUSBIsEmpty() throws {
        let devices = try USBHostBus.list()
        if !USBHostBus.present { #expect(devices.isEmpty) }
    }

    /// The glue without a device (what runs without USB hardware): libusbredirhost's
    /// threads start, its hello reaches the peer with the capabilities QEMU's xHCI path
    /// needs, and the peer closing ends the redirection once, with the reason.
    @Test func usbredirhostSaysHelloAndEndsWhenThePeerCloses() throws {
        var pair: [Int32] = [-1, -1]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &pair) == 0)
        let ended = EndedBox()
        let redirection = try USBHostRedirection.startWithoutDevice(
            socket: pair[0], onLog: { _ in }, onEnded: { why in ended.set(why) })
        var hello: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 256)
        var pfd = pollfd(fd: pair[1], events: Int16(POLLIN), revents: 0)
        while hello.count < 80, poll(&pfd, 1, 10_000) == 1 {
            let n = read(pair[1], &buffer, buffer.count)
            if n <= 0 { break }
            hello += buffer[0..<n]
        }
        var observer = USBRedirObserver()
        let events = observer.feed(hello, from: .fromDevice)
        guard case .hello(_, let h)? = events.first else {
            Issue.record("no hello from usbredirhost: \(hello)")
            close(pair[1])
            return
        }
        #expect(h.version.hasPrefix("hostvmm"))
        #expect(h.has(.ids64Bit) && h.has(.bulkLength32Bit) && h.has(.endpointInfoMaxPacketSize))
        close(pair[1])
        #expect(ended.wait(seconds: 10) == "QEMU closed the connection")
        _ = redirection
    }
}

final class EndedBox: @unchecked Sendable {
    private let condition = NSCondition()
    private var value: String?
    func set(_ v: String) { condition.withLock { value = v; condition.broadcast() } }
    func wait(seconds: Double) -> String? {
        let deadline = Date().addingTimeInterval(seconds)
        return condition.withLock {
            while value == nil { if !condition.wait(until: deadline) { break } }
            return value
        }
    }
}
