import AgentProtocol
import Foundation
import LinuxSystem
import Testing

/// The balloon really gives memory back: guest RAM is a shared memfd, so
/// inflated and reported pages leave QEMU's resident set.
@Suite(.serialized, .timeLimit(.minutes(30))) struct BalloonEndToEndTests {
    private func qemuRSS(_ vm: BootedVM) throws -> Int64 {
        let pid = try #require(try vm.status()["pids"]?["qemu"]?.int64Value)
        let status = try #require(FileIO.readText("/proc/\(pid)/status"))
        let line = try #require(status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") })
        return (Int64(line.split(separator: " ")[1]) ?? 0) << 10
    }

    /// Polls QEMU's RSS until `condition` holds (bounded); returns the last value.
    private func waitForRSS(_ vm: BootedVM, timeout: TimeInterval, _ condition: (Int64) -> Bool) throws -> Int64 {
        let deadline = Date().addingTimeInterval(timeout)
        var rss = try qemuRSS(vm)
        while !condition(rss) && Date() < deadline {
            Syscall.pause(milliseconds: 250)  // sampling a counter: there is no event to wait for
            rss = try qemuRSS(vm)
        }
        return rss
    }

    private func balloon(_ vm: BootedVM) throws -> JSONValue {
        let r = try vm.cli(["balloon", vm.name, "--json"])
        return try JSONParser.parse(r.output)
    }

    @Test func inflateAndFreePageReportingReturnMemoryToTheHost() throws {
        let vm = try BootedVM(name: "e2e-balloon")
        let mib: Int64 = 1 << 20
        // 360 MiB: the 512 MiB guest's initramfs (about 19 MB, in RAM) leaves no more
        // room; at 400 MiB the OOM killer took the guest agent.
        let touch = #"mkdir -p /mnt && mount -t tmpfs -o size=460m tmpfs /mnt; dd if=/dev/zero of=/mnt/x bs=1M count=360"#

        // The guest touches 360 MiB (tmpfs pages are real guest RAM).
        let before = try qemuRSS(vm)
        #expect(try vm.guestRun(touch).code == 0)
        let touched = try qemuRSS(vm)
        #expect(touched - before > 300 * mib, "RSS rose only \((touched - before) / mib) MiB")

        // Free it and balloon to 128 MiB: 384 MiB inflated; RSS must fall by 80 % of that.
        #expect(try vm.guestRun("rm /mnt/x").code == 0)
        let set = try vm.cli(["balloon", vm.name, "128M"])
        #expect(set.status == 0, "\(set.output)")
        let inflated: Int64 = 384 * mib
        let afterInflate = try waitForRSS(vm, timeout: 90) { touched - $0 >= inflated * 8 / 10 }
        #expect(touched - afterInflate >= inflated * 8 / 10,
                "RSS fell \((touched - afterInflate) / mib) MiB for \(inflated / mib) MiB inflated")
        print("balloon: QEMU RSS \(touched / mib) -> \(afterInflate / mib) MiB after inflating \(inflated / mib) MiB")
        let deadline = Date().addingTimeInterval(60)
        while try balloon(vm)["actual-bytes"]?.int64Value != 128 * mib && Date() < deadline {
            Syscall.pause(milliseconds: 250)
        }
        #expect(try balloon(vm)["actual-bytes"] == .int(128 * mib))
        #expect(!vm.events(named: "balloon-change").isEmpty)

        // Bad targets change nothing.
        for bad in ["1G", "32M", "12Q"] {
            let r = try vm.cli(["balloon", vm.name, bad])
            #expect(r.status == 1, "\(bad) accepted")
            #expect(r.output.contains("error"), "\(bad): \(r.output)")
        }
        #expect(try balloon(vm)["target-bytes"] == .int(128 * mib))

        // Deflate: the guest gets its memory back.
        #expect(try vm.cli(["balloon", vm.name, "512M"]).status == 0)
        let deflateDeadline = Date().addingTimeInterval(60)
        while try balloon(vm)["actual-bytes"]?.int64Value != 512 * mib && Date() < deflateDeadline {
            Syscall.pause(milliseconds: 250)
        }
        #expect(try balloon(vm)["actual-bytes"] == .int(512 * mib))
        let stats = try balloon(vm)["guest-stats"]
        #expect(stats?["total"]?.int64Value ?? 0 > 400 * mib, "guest statistics: \(String(describing: stats))")

        // Free-page reporting alone: touch again, free, no balloon.
        #expect(try vm.guestRun(#"dd if=/dev/zero of=/mnt/y bs=1M count=360"#).code == 0)
        let touchedAgain = try qemuRSS(vm)
        #expect(try vm.guestRun("rm /mnt/y").code == 0)
        let reported = try waitForRSS(vm, timeout: 60) { touchedAgain - $0 >= 200 * mib }
        print("free-page reporting: QEMU RSS \(touchedAgain / mib) -> \(reported / mib) MiB after freeing 360 MiB")
        #expect(touchedAgain - reported >= 200 * mib, "reporting returned only \((touchedAgain - reported) / mib) MiB")

        // Without the driver the balloon cannot move: a clear error, nothing changed.
        #expect(try vm.guestRun("rmmod virtio_balloon").code == 0)
        let noDriver = try vm.cli(["balloon", vm.name, "256M"])
        #expect(noDriver.status == 1)
        #expect(noDriver.output.contains("no active balloon driver"), "\(noDriver.output)")

        _ = try vm.cli(["down", vm.name])
        #expect(vm.upExitCode() == 0)
    }
}
