import AgentProtocol
import Foundation
import LinuxSystem
import Testing
import pvpanic

/// Real kernel panics in the real guest (sysrq 'c' through guest-exec), caught
/// through pvpanic and QMP, with the bundle checked file by file.
@Suite(.serialized, .timeLimit(.minutes(30))) struct PanicEndToEndTests {
    @Test func restartPolicyCapturesBundlesAndStopsACrashLoop() throws {
        let vm = try BootedVM(name: "e2e-panic", options: ["--keep-crashes", "2"])
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
