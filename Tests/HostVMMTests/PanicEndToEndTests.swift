import AgentProtocol
import Foundation
import LinuxSystem
import Testing
import pvpanic
import TestSupport

/// Real kernel panics in the real guest (sysrq 'c' through guest-exec), caught
/// through pvpanic and QMP, with the bundle checked file by file.
@Suite(.serialized, .timeLimit(.minutes(30))) struct PanicEndToEndTests {
    @Test func restartPolicyCapturesBundlesAndStopsACrashLoop() throws {
        let vm = try BootedVM(name: "e2e-panic", options: ["--keep-crashes", "2"])
        let banner = try Self.bannerAddress(vm)
        try vm.crashGuest()
        #expect(vm.waitForOccurrence("\"crash-captured\"", count: 1, timeout: 120), "\(vm.up.transcript)")

        let store = CrashStore(stateDirectory: vm.stateDir)
        let bundle = try #require(store.list().last)
        let console = try String(contentsOfFile: "\(bundle.path)/console.txt", encoding: .utf8)
        #expect(console.contains("sysrq: Trigger a crash"))
        #expect(bundle.summary == "Kernel panic - not syncing: sysrq triggered crash")
        let registers = try String(contentsOfFile: "\(bundle.path)/registers.txt", encoding: .utf8)
        #expect(registers.contains("CPU#0") && registers.contains("CPU#1"), "every vCPU")
        #expect(bundle.event?["action"] == .string("restart"))
        #expect(bundle.event?["qemu-action"] == .string("pause"))
        // The vmcore is an ELF core whose PT_LOAD segments cover the guest's RAM.
        let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: "\(bundle.path)/vmcore"))
        let header = Array(handle.readData(ofLength: 65536))
        try handle.close()
        let core = try #require(ELFCore.parse(header), "vmcore is not an ELF core")
        #expect(core.machine == 62)
        #expect(core.loadBytes >= 512 << 20, "PT_LOAD covers \(core.loadBytes) bytes of a 512 MiB guest")
        // Written by hostvmm from its guest RAM memfd, sparse (issue #17)...
        let vmcore = bundle.event?["vmcore"]
        #expect(vmcore?["method"] == .string("guest-memory"), "\(String(describing: vmcore))")
        let allocated = try #require(vmcore?["allocated-bytes"]?.int64Value)
        #expect(allocated < 512 << 20 / 2, "a freshly booted guest touched little of its RAM: \(allocated) bytes on disk")
        // ...and gdb reads the running kernel's linux_banner from it at its physical address.
        let gdb = try runCommand("/usr/bin/gdb", ["-batch", "-nx", "-c", "\(bundle.path)/vmcore",
                                                  "-ex", "x/s 0x\(String(banner.physical, radix: 16))"])
        #expect(gdb.output.contains(String(banner.version.prefix(60))), "gdb: \(gdb.output)\nexpected \(banner.version)")
        let crashEvent = try #require(vm.events(named: "crash-captured").first)
        #expect(crashEvent["data"]?["summary"] == .string("Kernel panic - not syncing: sysrq triggered crash"))

        // restart: the guest comes back and its agent answers.
        #expect(vm.waitForOccurrence("agent ready after", count: 2, timeout: BootedVM.bootTimeout), "\(vm.postMortem())")
        #expect(try vm.cli(["ping", vm.name]).status == 0)

        // Two more panics inside ten minutes: a crash loop, so the VM stays paused.
        try vm.crashGuest()
        #expect(vm.waitForOccurrence("agent ready after", count: 3, timeout: BootedVM.bootTimeout), "\(vm.postMortem())")
        try vm.crashGuest()
        #expect(vm.waitForOccurrence("\"crash-loop\"", count: 1, timeout: 120), "\(vm.postMortem())")
        let status = try vm.status()
        #expect(status["state"] == .string("paused"))
        #expect(store.list().count == 2, "--keep-crashes 2 prunes the oldest")
        // hostvmm itself never goes down with its guest.
        #expect(try vm.cli(["down", vm.name]).status == 0)
        #expect(vm.upExitCode() == 0)
    }

    /// Where the guest kernel's linux_banner lies in guest-physical memory, and the text it
    /// holds (/proc/version): its virtual address (kallsyms) less _text's, from the physical
    /// start of "Kernel code" (/proc/iomem). KASLR moves both per boot; the image is contiguous.
    static func bannerAddress(_ vm: BootedVM) throws -> (physical: UInt64, version: String) {
        let r = try vm.guestRun("grep -w -e linux_banner -e _text /proc/kallsyms; grep 'Kernel code' /proc/iomem; cat /proc/version")
        var text: UInt64?, banner: UInt64?, start: UInt64?, version: String?
        for line in r.output.split(separator: "\n").map(String.init) {
            let words = line.split(separator: " ").map(String.init)
            if words.count == 3, words[2] == "_text" { text = UInt64(words[0], radix: 16) }
            if words.count == 3, words[2] == "linux_banner" { banner = UInt64(words[0], radix: 16) }
            if line.hasSuffix(": Kernel code") { start = UInt64(words[0].split(separator: "-")[0], radix: 16) }
            if line.hasPrefix("Linux version ") { version = line }
        }
        guard let text, let banner, let start, let version, banner > text else {
            throw TestFailure("no kernel addresses in the guest: \(r.output)")
        }
        return (start + (banner - text), version)
    }

    @Test func pausePolicyWithoutVmcore() throws {
        let vm = try BootedVM(name: "e2e-pause", options: ["--on-panic", "pause", "--vmcore", "none"])
        try vm.crashGuest()
        #expect(vm.waitForOccurrence("\"crash-captured\"", count: 1, timeout: 120))
        let bundle = try #require(CrashStore(stateDirectory: vm.stateDir).list().last)
        #expect(!FileManager.default.fileExists(atPath: "\(bundle.path)/vmcore"))
        #expect(bundle.event?["vmcore"]?["format"] == .string("none"))
        #expect(try vm.status()["state"] == .string("paused"))
        let listing = try vm.cli(["crashes", vm.name])
        #expect(listing.output.contains("sysrq triggered crash"))

        // `hostvmm vmcore` of the frozen guest, both ways (issue #17): the same RAM, ours
        // sparse; the guest stays paused; an existing file is never replaced.
        // QEMU's notes go to the state directory, not beside the path given: a file there stays.
        let neighbour = "\(vm.stateDir)/guest-memory.core.notes"
        #expect(FileManager.default.createFile(atPath: neighbour, contents: Data("a person's file".utf8)))
        var cores: [String: JSONValue] = [:]
        for method in ["guest-memory", "dump-guest-memory"] {
            let path = "\(vm.stateDir)/\(method).core"
            let r = try vm.cli(["vmcore", vm.name, "--method", method, "-o", path, "--json"])
            let info = try #require(try? JSONParser.parse(r.output), "vmcore --method \(method): \(r.output)")
            #expect(info["method"] == .string(method) && info["format"] == .string("elf") && info["path"] == .string(path))
            let header = Array(try #require(FileHandle(forReadingAtPath: path)).readData(ofLength: 65536))
            #expect(ELFCore.parse(header).map { $0.loadBytes >= 512 << 20 } == true, "\(method): not a 512 MiB ELF core")
            cores[method] = info
        }
        let ours = try #require(cores["guest-memory"]?["allocated-bytes"]?.int64Value)
        let theirs = try #require(cores["dump-guest-memory"]?["allocated-bytes"]?.int64Value)
        #expect(ours * 2 < theirs, "ours takes \(ours) bytes on disk, QEMU's \(theirs)")
        #expect(try vm.status()["state"] == .string("paused"))
        #expect(try String(contentsOfFile: neighbour, encoding: .utf8) == "a person's file")
        let again = try vm.cli(["vmcore", vm.name, "-o", "\(vm.stateDir)/guest-memory.core"])
        #expect(again.status != 0 && again.output.contains("exists"), "\(again.output)")
        _ = try vm.cli(["down", vm.name])
        #expect(vm.upExitCode() == 0)
    }

    /// With ACPI the kernel powers off through ACPI before pvpanic's low-priority
    /// handler runs; without it (acpi=off) pvpanic announces the poweroff and
    /// QEMU reports GUEST_PVSHUTDOWN, which must count as a clean shutdown.
    @Test func pvpanicShutdownIsACleanShutdown() throws {
        let vm = try BootedVM(name: "e2e-pvshut", options: ["--no-acpi"])
        let acpi = try vm.cli(["shutdown", vm.name, "--mode", "acpi"])
        #expect(acpi.status == 1)
        #expect(acpi.output.contains("without ACPI"))
        let r = try vm.cli(["shutdown", vm.name, "--mode", "agent"])
        #expect(r.status == 0, "\(r.output)")
        #expect(vm.upExitCode() == 0, "\(vm.up.transcript)")
        #expect(!vm.events(named: "guest-pvshutdown").isEmpty, "\(vm.up.transcript)")
        #expect(vm.up.transcript.contains("announced a clean poweroff"))
        #expect(vm.events(named: "crash-captured").isEmpty)
        #expect(!FileManager.default.fileExists(atPath: "\(vm.stateDir)/crashes"))
    }

    @Test func poweroffPolicyEndsTheRunAsAFailure() throws {
        let vm = try BootedVM(name: "e2e-poweroff", options: ["--on-panic", "poweroff", "--vmcore", "none"])
        try vm.crashGuest()
        #expect(vm.upExitCode(timeout: 120) == 1, "\(vm.up.transcript)")
        #expect(vm.events(named: "qemu-exited").last?["data"]?["reason"] == .string("the guest panicked"))
    }
}
