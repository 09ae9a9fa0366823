import TestSupport
import Foundation
import Testing

/// One Linux `struct input_event` as read from /dev/input/eventN on x86-64 (24 bytes).
struct GuestEvent: Equatable, CustomStringConvertible {
    var type: UInt16, code: UInt16, value: Int32
    var description: String { "(\(type),\(code),\(value))" }
}

/// Reading the guest's evdev devices, for the input tests.
enum GuestEvdev {
    /// Events from `od -An -tx1` output.
    static func parse(_ od: String) -> [GuestEvent] {
        let bytes = od.split(whereSeparator: { $0 == " " || $0 == "\n" }).compactMap { UInt8($0, radix: 16) }
        return stride(from: 0, to: bytes.count - 23, by: 24).map { o in
            func le(_ at: Int, _ n: Int) -> UInt32 { (0..<n).reduce(0) { $0 | UInt32(bytes[o + at + $1]) << (8 * $1) } }
            return GuestEvent(type: UInt16(le(16, 2)), code: UInt16(le(18, 2)), value: Int32(bitPattern: le(20, 4)))
        }
    }

    /// The eventN handler and inputN sysfs name of the device called `name` in /proc/bus/input/devices.
    static func findDevice(_ devices: String, _ name: String) -> (event: String, input: String)? {
        for block in devices.components(separatedBy: "\n\n") where block.contains("N: Name=\"\(name)\"") {
            let event = block.split(whereSeparator: { $0 == " " || $0 == "\n" }).first { $0.hasPrefix("event") }
            let sysfs = block.split(separator: "\n").first { $0.hasPrefix("S: Sysfs=") }
            guard let event, let sysfs, let input = sysfs.split(separator: "/").last else { return nil }
            return (String(event), String(input))
        }
        return nil
    }
}

extension BootedVM {
    /// Starts `dd` in the guest's background copying `count` events of /dev/input/`event`
    /// into `file`, and returns once dd has the device open (bounded, 5 s): events sent
    /// before that would be lost.
    func captureEvents(_ event: String, into file: String, count: Int) throws {
        let r = try guestRun("""
            dd if=/dev/input/\(event) of=\(file) bs=24 count=\(count) 2>/dev/null & p=$!
            for i in $(seq 100); do ls -l /proc/$p/fd 2>/dev/null | grep -q " /dev/input/\(event)$" && exit 0; sleep 0.05; done
            exit 1
            """)
        guard r.code == 0 else { throw TestFailure("dd did not open /dev/input/\(event) within 5 s: \(r.output)") }
    }

    /// Starts reading `count` events from the guest's device called `name` (in `devices`,
    /// /proc/bus/input/devices), runs the spice-gtk client with `arguments` until it prints
    /// `says`, and returns the events other than SYN_REPORT as "type:code:value".
    func eventsAfterSpiceClient(_ devices: String, _ name: String, count: Int, afterClient arguments: [String],
                                says: String) throws -> [String] {
        let device = try #require(GuestEvdev.findDevice(devices, name), "\(devices)")
        let file = "/tmp/events-\(device.event).bin"
        try captureEvents(device.event, into: file, count: count)
        let uri = try cli(["spice", self.name]).output.trimmingCharacters(in: .whitespacesAndNewlines)
        let client = try runCommand("/usr/bin/python3", [TestEnvironment.spiceDevicesClient, uri] + arguments, timeout: 90)
        #expect(client.output.contains(says), "client: \(client.output)")
        let events = try readEvents(file, count: count)
        return events.filter { $0.type != 0 }.map { "\($0.type):\($0.code):\($0.value)" }
    }

    /// Waits (bounded, 30 s) until `file` holds `count` events, then returns what it holds.
    func readEvents(_ file: String, count: Int) throws -> [GuestEvent] {
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            let size = try guestRun("wc -c < \(file)").output.trimmingCharacters(in: .whitespacesAndNewlines)
            if Int(size) ?? 0 >= 24 * count { break }
        }
        return GuestEvdev.parse(try guestRun("od -An -tx1 -v \(file)").output)
    }
}
