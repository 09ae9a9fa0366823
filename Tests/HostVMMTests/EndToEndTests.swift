import AgentProtocol
import Foundation
import LinuxSystem
import Testing

/// Boots the embedded guest under real QEMU with the real `hostvmm` binary and
/// drives it from the CLI, as a person would. Serialized: each boot is heavy
/// on 2 cores. The image is built by scripts/test.sh before the tests run.
@Suite(.serialized, .timeLimit(.minutes(30))) struct EndToEndTests {
    @Test func bootPingInfoStatusRebootAndAgentShutdown() throws {
        let vm = try BootedVM(name: "e2e-agent")

        let ping = try vm.cli(["ping", vm.name])
        #expect(ping.status == 0, "\(ping.output)")
        #expect(ping.output.contains("agent answered in"))

        let info = try vm.cli(["agent", vm.name, #"{"execute":"guest-info"}"#])
        #expect(info.status == 0, "\(info.output)")
        let reply = try JSONParser.parse(info.output)
        let names = reply["return"]?["supported_commands"]?.arrayValue?.compactMap { $0["name"]?.stringValue } ?? []
        #expect(names.contains("guest-ping") && names.contains("guest-shutdown"))

        let unknown = try vm.cli(["agent", vm.name, #"{"execute":"guest-nonexistent"}"#])
        #expect(unknown.status == 1)
        #expect(unknown.output.contains("CommandNotFound"))

        let status = try vm.status()
        #expect(status["state"] == .string("running"))
        #expect(status["agent"]?["ready"] == .bool(true))
        if FileManager.default.fileExists(atPath: "/sys/module/kvm_pvm") {
            #expect(status["accelerator"]?["kind"] == .string("tcg"))
        }
        let qemuPID = try #require(status["pids"]?["qemu"]?.int64Value)
        #expect(kill(pid_t(qemuPID), 0) == 0, "QEMU pid \(qemuPID) is not alive")
        let stateDir = try #require(status["state-dir"]?.stringValue)
        let attributes = try FileManager.default.attributesOfItem(atPath: stateDir)
        #expect((attributes[.posixPermissions] as? Int) == 0o700)
        let consoleAttributes = try FileManager.default.attributesOfItem(atPath: "\(stateDir)/console.log")
        #expect((consoleAttributes[.posixPermissions] as? Int) == 0o600)

        let console = try vm.cli(["console", vm.name, "--lines", "400"])
        #expect(console.output.contains("hostvmm-guest: init done"))

        // Reboot through the agent: confirmed by RESET, and the agent comes back.
        let linesBeforeReboot = vm.up.output.count
        let reboot = try vm.cli(["shutdown", vm.name, "--mode", "agent", "--reboot"])
        #expect(reboot.status == 0, "\(reboot.output)")
        #expect(reboot.output.contains("reboot confirmed (reset)"))
        #expect(vm.up.waitForLine(containing: "agent ready after", after: linesBeforeReboot,
                                  timeout: BootedVM.bootTimeout) != nil, "agent did not come back after reboot")
        let pingAgain = try vm.cli(["ping", vm.name])
        #expect(pingAgain.status == 0, "\(pingAgain.output)")

        let shutdown = try vm.cli(["shutdown", vm.name, "--mode", "agent"])
        #expect(shutdown.status == 0, "\(shutdown.output)")
        #expect(shutdown.output.contains("powerdown confirmed (shutdown)"))
        #expect(vm.upExitCode() == 0, "\(vm.up.transcript)")
        #expect(vm.events(named: "shutdown").last?["data"]?["reason"] == .string("guest-shutdown"))
        // A regular poweroff is never taken for a crash.
        #expect(vm.events(named: "crash-captured").isEmpty)
        #expect(!FileManager.default.fileExists(atPath: "\(vm.stateDir)/crashes"))
    }

    @Test func acpiShutdown() throws {
        let vm = try BootedVM(name: "e2e-acpi")
        let r = try vm.cli(["shutdown", vm.name, "--mode", "acpi"])
        #expect(r.status == 0, "\(r.output)")
        #expect(r.output.contains("powerdown confirmed (shutdown)"))
        #expect(vm.upExitCode() == 0, "\(vm.up.transcript)")
    }

    @Test func interruptShutsTheGuestDownGracefully() throws {
        let vm = try BootedVM(name: "e2e-sigint")
        vm.up.signal(SIGINT)
        #expect(vm.upExitCode() == 0, "\(vm.up.transcript)")
        #expect(vm.up.transcript.contains("shutting the guest down"))
        #expect(vm.events(named: "shutdown").last?["data"]?["reason"] == .string("guest-shutdown"))
        let after = try vm.cli(["ping", vm.name])
        #expect(after.status == 1)
        #expect(after.output.contains("not running"))
    }

    @Test func qemuCrashIsReportedWithItsStatus() throws {
        let vm = try BootedVM(name: "e2e-crash")
        let qemuPID = try #require(try vm.status()["pids"]?["qemu"]?.int64Value)
        kill(pid_t(qemuPID), SIGKILL)
        #expect(vm.upExitCode() == 1, "\(vm.up.transcript)")
        #expect(vm.up.transcript.contains("QEMU killed by signal 9"))
        #expect(vm.events(named: "qemu-exited").last?["data"]?["signal"] == .int(9))
    }
}

/// Start-up errors a person meets before any guest boots.
@Suite struct CLIErrorTests {
    @Test func missingQEMUNamesThePackage() throws {
        let root = try TestEnvironment.temporaryDirectory("cli")
        defer { try? FileManager.default.removeItem(atPath: root) }
        let r = try runCommand(TestEnvironment.hostvmm, ["up", "--name", "x", "--qemu", "/nonexistent/qemu"],
                               environment: ["HOSTVMM_STATE_DIR": root])
        #expect(r.status == 1)
        #expect(r.output.contains("qemu-system-x86") && r.output.contains("bookworm-backports"))
    }

    @Test func commandsOnAVMThatIsNotRunningSaySo() throws {
        let root = try TestEnvironment.temporaryDirectory("cli")
        defer { try? FileManager.default.removeItem(atPath: root) }
        for args in [["ping", "ghost"], ["status", "ghost"], ["shutdown", "ghost"]] {
            let r = try runCommand(TestEnvironment.hostvmm, args, environment: ["HOSTVMM_STATE_DIR": root])
            #expect(r.status == 1)
            #expect(r.output.contains("VM 'ghost' is not running"), "\(r.output)")
        }
    }

    @Test func badArgumentsAreRefused() throws {
        for args in [["up", "--memory", "12Q"], ["up", "--name", "../etc"], ["up", "--cpus", "0"],
                     ["shutdown", "--mode", "magic"], ["agent", "not json"]]
        {
            let r = try runCommand(TestEnvironment.hostvmm, args)
            #expect(r.status != 0, "\(args) was accepted")
            #expect(r.output.lowercased().contains("error"), "\(args): \(r.output)")
        }
    }
}
