import AgentProtocol
import Foundation
import TestSupport
import Testing

/// USB redirection end to end (issue #13), on one booted embedded guest: a real
/// spice-gtk client sees the usbredir channels; a test USB disk
/// (Clients/usbredir_disk.py: a usbredir device side serving a 64 MiB image as
/// USB mass storage, over a real SPICE link) is enumerated by the guest's Linux
/// on the xHCI and on the EHCI, read back byte for byte, written, unplugged and
/// plugged again; faults (a client gone mid-transfer, a malformed stream) leave
/// hostvmm and QEMU serving; 100 plug cycles leak nothing. The disk is a test
/// device because these machines have no USB hardware (no /sys/bus/usb).
@Suite(.serialized, .timeLimit(.minutes(30))) struct USBEndToEndTests {
    static let disk = "\(TestEnvironment.packageRoot)/Tests/HostVMMTests/Clients/usbredir_disk.py"

    static func sha256(_ path: String) throws -> String {
        String(try runCommand("/usr/bin/sha256sum", [path]).output.prefix(64))
    }

    /// A random 64 MiB image and its sha256.
    static func image(_ dir: String) throws -> (path: String, sha: String) {
        let path = "\(dir)/disk.img"
        var bytes = [UInt8](repeating: 0, count: 64 << 20)
        var rng = SystemRandomNumberGenerator()
        bytes.withUnsafeMutableBytes { raw in
            let words = raw.bindMemory(to: UInt64.self)
            for i in words.indices { words[i] = rng.next() }
        }
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return (path, try sha256(path))
    }

    func device(_ uri: String, channel: Int, image: String, _ extra: [String] = []) throws -> WatchedProcess {
        try WatchedProcess("/usr/bin/python3", [Self.disk, "--image", image, "--spice", uri, "--channel", String(channel)] + extra)
    }

    func usb(_ vm: BootedVM) throws -> JSONValue {
        let r = try vm.cli(["usb", vm.name])
        guard r.status == 0 else { throw TestFailure("hostvmm usb: \(r.output)") }
        return try JSONParser.parse(r.output)
    }

    /// Entry `index` of the `spice-channels` array of `hostvmm usb`.
    func channel(_ status: JSONValue, _ index: Int) -> JSONValue? {
        guard case .array(let list)? = status["spice-channels"], list.indices.contains(index) else { return nil }
        return list[index]
    }

    func events(_ vm: BootedVM, _ name: String) -> Int { vm.up.count(containing: "\"event\": \"\(name)\"") }

    func waitForEvent(_ vm: BootedVM, _ name: String, count: Int, _ what: String) throws {
        guard vm.waitForOccurrence("\"event\": \"\(name)\"", count: count, timeout: 60) else {
            throw TestFailure("no \(name) event #\(count) (\(what)) within 60 s:\n\(vm.postMortem())")
        }
    }

    /// Waits until the guest has a /dev/sda of 64 MiB from our disk (usb-storage bound).
    func waitForGuestDisk(_ vm: BootedVM, _ what: String) throws {
        let script = "for i in $(seq 1 200); do [ \"$(cat /sys/block/sda/size 2>/dev/null)\" = 131072 ] && exit 0; sleep 0.1; done; exit 1"
        let r = try vm.guestRun(script)
        guard r.code == 0 else {
            let dmesg = try vm.guestRun("dmesg | tail -30").output
            throw TestFailure("the guest has no 64 MiB /dev/sda (\(what)):\n\(dmesg)")
        }
    }

    func waitForGuestDiskGone(_ vm: BootedVM, _ what: String) throws {
        let r = try vm.guestRun("for i in $(seq 1 200); do [ -e /sys/block/sda ] || exit 0; sleep 0.1; done; exit 1")
        guard r.code == 0 else { throw TestFailure("/dev/sda is still there (\(what))") }
    }

    @Test func usbDisksReachTheGuestOverSpiceAndFaultsLeaveEverythingServing() throws {
        let vm = try BootedVM(name: "e2e-usb", options: ["--usb-redir", "2"])
        let work = try TestEnvironment.temporaryDirectory("usb")
        let (imagePath, _) = try Self.image(work)
        let uri = try vm.cli(["spice", vm.name]).output.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(vm.up.count(containing: "2 SPICE usbredir channels (0: xhci, 1: ehci)") == 1, "\(vm.up.transcript)")

        // 1. spice-gtk sees the two usbredir channels.
        let gtk = try runCommand("/usr/bin/python3", [TestEnvironment.spiceDevicesClient, uri, "usbredir", "2"], timeout: 60)
        #expect(gtk.output.contains("usbredir 0") && gtk.output.contains("usbredir 1"), "spice-gtk: \(gtk.output)")

        // The guest loaded the host controller drivers (a USB controller is there).
        let drivers = try vm.guestRun("ls /sys/bus/pci/drivers").output
        #expect(drivers.contains("xhci_hcd") && drivers.contains("ehci-pci"), "drivers: \(drivers)")

        for (channel, controller) in [(0, "xhci"), (1, "ehci")] {
            let attachedBefore = events(vm, "usb-attached")
            let dev = try device(uri, channel: channel, image: imagePath)
            defer { dev.signal(SIGKILL); _ = dev.waitForExit(timeout: 10) }
            #expect(dev.waitForLine(containing: "connected 1d6b:0104 high", timeout: 60) != nil, "device: \(dev.transcript)")
            try waitForEvent(vm, "usb-attached", count: attachedBefore + 1, controller)
            let status = try usb(vm)
            let entry = self.channel(status, channel)
            #expect(entry?["controller"]?.stringValue == controller && entry?["device"]?["vid-pid"]?.stringValue == "1d6b:0104",
                    "usb: \(JSONWriter.string(status))")

            // 2. Enumerated: ids in sysfs, usb-storage bound, /dev/sda; read back whole.
            try waitForGuestDisk(vm, controller)
            let ids = try vm.guestRun("for d in /sys/bus/usb/devices/*; do [ -f $d/idVendor ] && echo $(cat $d/idVendor):$(cat $d/idProduct); done; ls /sys/bus/usb/drivers/usb-storage").output
            #expect(ids.contains("1d6b:0104") && ids.contains(":1.0"), "sysfs: \(ids)")
            let sha = try Self.sha256(imagePath)  // as it is now: the previous pass wrote a block
            let read = try vm.guestRun("dd if=/dev/sda bs=1M iflag=direct 2>/dev/null | sha256sum", timeout: 300)
            #expect(read.output.hasPrefix(sha), "\(controller): guest read \(read.output), image \(sha)")

            // 3. A block written in the guest lands in the device's backing file.
            let marker = "hostvmm usb write on \(controller) ".padding(toLength: 512, withPad: "#", startingAt: 0)
            try vm.putFile("/tmp/block", Array(marker.utf8))
            let sector = 4096 + channel
            let wrote = try vm.guestRun("dd if=/tmp/block of=/dev/sda bs=512 seek=\(sector) count=1 oflag=direct conv=fsync 2>&1")
            #expect(wrote.code == 0, "dd: \(wrote.output)")
            let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: imagePath))
            try handle.seek(toOffset: UInt64(sector * 512))
            let landed = try handle.read(upToCount: 512) ?? Data()
            try handle.close()
            #expect(String(decoding: landed, as: UTF8.self) == marker, "\(controller): the written block is not in the image")

            // 4. Unplug: the guest's disk goes away cleanly; replug: it is back.
            let detachedBefore = events(vm, "usb-detached")
            dev.signal(SIGUSR1)
            try waitForEvent(vm, "usb-detached", count: detachedBefore + 1, "\(controller) unplug")
            try waitForGuestDiskGone(vm, "\(controller) unplug")
            dev.signal(SIGUSR2)
            try waitForEvent(vm, "usb-attached", count: attachedBefore + 2, "\(controller) replug")
            try waitForGuestDisk(vm, "\(controller) replug")
            let again = try vm.guestRun("dd if=/dev/sda bs=512 skip=\(sector) count=1 iflag=direct 2>/dev/null | head -c 30")
            #expect(again.output.contains("hostvmm usb write on \(controller)"), "after replug: \(again.output)")
            dev.signal(SIGTERM)
            #expect(dev.exitCode(timeout: 30) == 0, "device: \(dev.transcript)")
            try waitForGuestDiskGone(vm, "\(controller) client gone")
        }

        // Host devices: an absent one is a clear error and nothing changes.
        let absent = try vm.cli(["usb", "attach", vm.name, "dead:beef"])
        #expect(absent.status != 0 && absent.output.contains("dead:beef"), "attach: \(absent.output)")
        #expect(try usb(vm)["host-devices"] == .array([]))

        // 5. The client vanishes mid-transfer: the guest sees an unplug, nothing hangs,
        //    and the next client on the same channel works.
        let dropper = try device(uri, channel: 0, image: imagePath, ["--drop-after-bytes", String(8 << 20)])
        #expect(dropper.waitForLine(containing: "connected", timeout: 60) != nil, "\(dropper.transcript)")
        try waitForGuestDisk(vm, "before the drop")
        let midway = try vm.guestRun("dd if=/dev/sda of=/dev/null bs=1M iflag=direct 2>&1; echo status $?", timeout: 120)
        #expect(dropper.waitForLine(containing: "dropped", timeout: 60) != nil, "\(dropper.transcript)")
        #expect(!midway.output.contains("status 0"), "the read finished although the device left: \(midway.output)")
        try waitForGuestDiskGone(vm, "after the drop")
        #expect(try vm.cli(["ping", vm.name]).status == 0)
        let next = try device(uri, channel: 0, image: imagePath)
        defer { next.signal(SIGKILL); _ = next.waitForExit(timeout: 10) }
        try waitForGuestDisk(vm, "a new client after the drop")
        let sha = try Self.sha256(imagePath)
        let first = try vm.guestRun("dd if=/dev/sda bs=1M iflag=direct 2>/dev/null | sha256sum", timeout: 300)
        #expect(first.output.hasPrefix(sha), "after the drop: \(first.output)")
        next.signal(SIGTERM)
        #expect(next.exitCode(timeout: 30) == 0)

        // 6. A malformed stream (an unknown packet type with more bytes behind it, which
        //    aborts QEMU 10 when it reaches it): refused by hostvmm; QEMU and the port live on.
        let refusedBefore = events(vm, "usb-stream-refused")
        let hostile = try device(uri, channel: 1, image: imagePath, ["--garbage"])
        defer { hostile.signal(SIGKILL); _ = hostile.waitForExit(timeout: 10) }
        #expect(hostile.waitForLine(containing: "garbage-sent", timeout: 60) != nil, "\(hostile.transcript)")
        try waitForEvent(vm, "usb-stream-refused", count: refusedBefore + 1, "garbage")
        hostile.signal(SIGTERM)
        _ = hostile.waitForExit(timeout: 30)
        #expect(try vm.cli(["ping", vm.name]).status == 0)
        let statusAfter = try vm.cli(["status", vm.name])
        #expect(statusAfter.output.contains("running"), "status: \(statusAfter.output)")
        let healed = try device(uri, channel: 1, image: imagePath)
        defer { healed.signal(SIGKILL); _ = healed.waitForExit(timeout: 10) }
        try waitForGuestDisk(vm, "a new client after the garbage")
        healed.signal(SIGTERM)
        #expect(healed.exitCode(timeout: 30) == 0)
        try waitForGuestDiskGone(vm, "after the healed client")

        // 7. 100 plug cycles (client connects, device attaches, client leaves): no channel,
        //    descriptor or memory left behind in hostvmm or QEMU.
        let pids = try JSONParser.parse(try vm.cli(["status", vm.name]).output)
        let hostvmmPID = try #require(pids["pids"]?["hostvmm"]?.int64Value, "status: \(JSONWriter.string(pids))")
        let qemuPID = try #require(pids["pids"]?["qemu"]?.int64Value, "status: \(JSONWriter.string(pids))")
        func fds(_ pid: Int64) -> Int { (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? -1 }
        func rssKiB(_ pid: Int64) -> Int {
            let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
            let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            return fields.count > 1 ? Int(fields[1]) ?? -1 : -1
        }
        func cycles(_ n: Int) throws {
            for i in 0..<n {
                let attached = events(vm, "usb-attached")
                let clientsGone = events(vm, "usb-client-disconnected")
                let d = try device(uri, channel: i % 2, image: imagePath)
                try waitForEvent(vm, "usb-attached", count: attached + 1, "cycle \(i)")
                d.signal(SIGTERM)
                _ = d.waitForExit(timeout: 30)
                try waitForEvent(vm, "usb-client-disconnected", count: clientsGone + 1, "cycle \(i)")
            }
        }
        try cycles(10)  // warm-up: allocator pools, the guest's driver state
        let before = (fds(hostvmmPID), rssKiB(hostvmmPID), fds(qemuPID), rssKiB(qemuPID))
        let started = Date()
        try cycles(100)
        let after = (fds(hostvmmPID), rssKiB(hostvmmPID), fds(qemuPID), rssKiB(qemuPID))
        print("usb: 100 plug cycles in \(String(format: "%.0f", Date().timeIntervalSince(started))) s; hostvmm fds \(before.0) -> \(after.0), "
              + "RSS \(before.1) -> \(after.1) KiB; QEMU fds \(before.2) -> \(after.2), RSS \(before.3) -> \(after.3) KiB")
        #expect(after.0 == before.0, "hostvmm fds \(before.0) -> \(after.0)")
        #expect(after.2 == before.2, "QEMU fds \(before.2) -> \(after.2)")
        #expect(after.1 - before.1 < 4096, "hostvmm RSS grew \(after.1 - before.1) KiB over 100 cycles")
        let final = try usb(vm)
        for ch in 0..<2 {
            #expect(channel(final, ch)?["client"] == .bool(false) && channel(final, ch)?["device"] == nil,
                    "usb: \(JSONWriter.string(final))")
        }
        let qemuLog = (try? String(contentsOfFile: "\(vm.stateDir)/qemu.log", encoding: .utf8)) ?? ""
        #expect(!qemuLog.contains("Assertion"), "qemu.log: \(qemuLog)")
    }

    /// Host devices: none here (no USB controller on these machines). `usb list` says so
    /// and succeeds; attaching an absent device is a clear error and changes nothing.
    @Test func hostDevicesAbsentAreClearErrors() throws {
        let list = try runCommand(TestEnvironment.hostvmm, ["usb", "list"])
        #expect(list.status == 0, "usb list: \(list.output)")
        if access("/sys/bus/usb", F_OK) != 0 {
            #expect(list.output.contains("no USB devices on this host"), "usb list: \(list.output)")
        }
        let bad = try runCommand(TestEnvironment.hostvmm, ["usb", "attach", "nonsense"])
        #expect(bad.status != 0 && bad.output.contains("neither VID:PID"), "\(bad.output)")
    }
}

