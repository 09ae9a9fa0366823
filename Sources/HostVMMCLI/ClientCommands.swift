import AgentProtocol
import ArgumentParser
import Foundation
import GuestImage
import HostVMM
import LinuxSystem

/// Connects to a running VM's control socket, or exits with a clear error.
func connect(_ vm: VMSelection) -> ControlClient {
    do {
        return try ControlClient(vmName: vm.name)
    } catch {
        fail("\(error)")
    }
}

/// Runs one control command, exiting 1 with its error text if it fails.
func execute(_ client: ControlClient, _ command: String, _ arguments: JSONObject = [:], timeout: Double = 120)
    -> JSONValue
{
    do {
        return try client.execute(command, arguments: arguments, timeout: timeout)
    } catch {
        fail("\(error)")
    }
}

func printJSON(_ value: JSONValue) {
    _ = Syscall.writeAll(fd: 1, JSONWriter.encode(value) + [0x0A])
}

struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Print a VM's state as JSON: state, accelerator and why, agent readiness, pids, state dir.")
    @OptionGroup var vm: VMSelection

    func run() {
        printJSON(execute(connect(vm), "query-status"))
    }
}

struct PingCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ping", abstract: "Ping the guest agent through the whole chain; prints the round trip.")
    @OptionGroup var vm: VMSelection
    @Option(help: "Seconds to wait for the agent.") var timeout: Double = 5

    func run() {
        let ms = Int64(max(1, min(timeout, 3600)) * 1000)
        let result = execute(connect(vm), "agent-ping", ["timeout-ms": .int(ms)], timeout: timeout + 10)
        let us = result["round-trip-us"]?.int64Value ?? 0
        _ = Syscall.writeAll(fd: 1, Array("agent answered in \(String(format: "%.2f", Double(us) / 1000)) ms\n".utf8))
    }
}

struct AgentCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agent",
        abstract: "Send a raw QGA command and print the agent's reply (like virsh qemu-agent-command).",
        discussion: #"Example: hostvmm agent '{"execute":"guest-info"}'"#)
    @Argument(help: "[NAME] JSON: the VM name (default 'default') and the QGA request.")
    var words: [String]
    @Option(help: "Seconds to wait for the reply.") var timeout: Double = 10

    func validate() throws {
        guard (1...2).contains(words.count) else { throw ValidationError("expected [NAME] JSON") }
    }

    func run() throws {
        let name = words.count == 2 ? words[0] : VMConfig.defaultName
        let vm = try VMSelection.parse([name])
        let command: JSONValue
        do {
            command = try JSONParser.parse(words.last!)
        } catch {
            fail("the request is not valid JSON: \(error)")
        }
        guard case .object = command else { fail(#"the request must be a JSON object such as {"execute":"guest-ping"}"#) }
        let ms = Int64(max(1, min(timeout, 3600)) * 1000)
        let reply = execute(connect(vm), "agent-command", ["command": command, "timeout-ms": .int(ms)],
                            timeout: timeout + 10)
        printJSON(reply)
        if reply["error"] != nil { throw ExitCode(1) }
    }
}

struct ShutdownCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "shutdown",
        abstract: "Power the guest off (or reboot/halt it) and wait until QEMU confirms.",
        discussion: """
            --mode agent asks the guest agent (guest-shutdown); --mode acpi presses the ACPI
            power button. Without --mode: the agent when it is ready, else ACPI. Success is
            QEMU's SHUTDOWN (or RESET for --reboot) event, not the agent's silence.
            """)
    @OptionGroup var vm: VMSelection
    @Option(help: "agent or acpi.") var mode: String?
    @Flag(help: "Reboot instead of powering off (agent only).") var reboot = false
    @Flag(help: "Halt instead of powering off (agent only; QEMU keeps running).") var halt = false

    func validate() throws {
        if let mode, !["agent", "acpi"].contains(mode) { throw ValidationError("--mode must be agent or acpi") }
        if reboot && halt { throw ValidationError("--reboot and --halt exclude each other") }
    }

    func run() {
        var args: JSONObject = ["action": .string(reboot ? "reboot" : halt ? "halt" : "powerdown")]
        if let mode { args["mode"] = .string(mode) }
        let client = connect(vm)
        let result = execute(client, "shutdown", args, timeout: 120)
        let observed = result["observed"]?.stringValue ?? "?"
        let seconds = result["seconds"]?.doubleValue ?? 0
        _ = Syscall.writeAll(fd: 1, Array("\(args["action"]!.stringValue!) confirmed (\(observed)) after \(seconds) s\n".utf8))
        if !reboot && !halt {
            // Wait for hostvmm to finish (it exits once QEMU has), so `up` and we agree.
            while (try? client.nextEvent(timeout: 30)) != nil {}
        }
    }
}

struct EventsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "events", abstract: "Print a VM's events, one JSON object per line, until it stops.")
    @OptionGroup var vm: VMSelection

    func run() throws {
        let client = connect(vm)
        while let event = try client.nextEvent() { printJSON(.object(event)) }
    }
}

struct DownCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "down", abstract: "Stop a VM at once (no guest shutdown), and wait until it is gone.")
    @OptionGroup var vm: VMSelection

    func run() {
        let client = connect(vm)
        _ = execute(client, "quit", timeout: 10)
        while (try? client.nextEvent(timeout: 30)) != nil {}
        say("VM '\(vm.name)' stopped")
    }
}

struct ConsoleCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "console", abstract: "Print the tail of a VM's serial console log.")
    @OptionGroup var vm: VMSelection
    @Option(name: .shortAndLong, help: "Lines to print.") var lines: Int = 50

    func run() {
        let path = StateDirectory.forVM(vm.name).consoleLog
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            fail("no console log for VM '\(vm.name)' (\(path))")
        }
        let tail = text.split(separator: "\n", omittingEmptySubsequences: false).suffix(max(1, lines))
        _ = Syscall.writeAll(fd: 1, Array((tail.joined(separator: "\n") + (text.hasSuffix("\n") ? "" : "\n")).utf8))
    }
}

struct ImageCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "image", abstract: "Manage the embedded guest image.", subcommands: [Build.self, Agent.self])

    /// What scripts/build-agent-deb.sh packs: the same binary the images carry.
    struct Agent: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "agent",
            abstract: "Build the fully static guest-agent the images carry and print its path.",
            discussion: "Release build with the Swift runtime and glibc linked in, scratch directory .build-guest.")

        func run() {
            do {
                // Progress on stderr: stdout is the path alone, for $(hostvmm image agent).
                let path = try AgentBuild { _ = Syscall.writeAll(fd: 2, Array("hostvmm: \($0)\n".utf8)) }.build()
                _ = Syscall.writeAll(fd: 1, Array("\(path)\n".utf8))
            } catch {
                fail("cannot build guest-agent: \(error)")
            }
        }
    }

    struct Build: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "build",
            abstract: "Build (or find in the cache) an embedded guest image.",
            discussion: """
                Images:
                \(GuestImageKind.allCases.map { "  " + $0.summary }.joined(separator: "\n"))
                Cache: \(ImageBuilder.defaultCacheDir()) (HOSTVMM_CACHE_DIR moves it): images/KEY for the \
                default image, images/desktop-KEY and desktop/base-*.tar (debootstrap's tree) for the desktop \
                image. The desktop image needs root, debootstrap and e2fsprogs (scripts/setup.sh installs them).
                """)
        @Option(help: "default or desktop.") var image: String = GuestImageKind.default.rawValue
        @Flag(help: "Rebuild even if a cached image matches (for desktop: debootstrap again too).") var force = false
        @Option(help: "Use this guest-agent binary instead of building one.") var agent: String?

        func validate() throws {
            guard GuestImageKind(rawValue: image) != nil else {
                throw ValidationError("--image must be one of \(GuestImageKind.allCases.map(\.rawValue).joined(separator: ", "))")
            }
        }

        func run() {
            do {
                let built = try GuestImageKind(rawValue: image)!.build(agentPath: agent, force: force) { say($0) }
                var text = "kernel: \(built.kernel)\ninitrd: \(built.initrd)\n"
                if let disk = built.disk { text += "disk: \(disk)\n" }
                _ = Syscall.writeAll(fd: 1, Array(text.utf8))
            } catch {
                fail("cannot build the guest image: \(error)")
            }
        }
    }
}

struct SpiceCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "spice", abstract: "Print the ready-to-paste spice:// URI (with its ticket) of a running VM.",
        discussion: "Example: remote-viewer \"$(hostvmm spice)\"")
    @OptionGroup var vm: VMSelection
    @Flag(help: "Print JSON.") var json = false

    func run() {
        let info = execute(connect(vm), "query-spice")
        if json {
            printJSON(info)
            return
        }
        guard info["enabled"] == .bool(true), let uri = info["uri"]?.stringValue else {
            fail("VM '\(vm.name)' runs without SPICE (--no-spice)")
        }
        _ = Syscall.writeAll(fd: 1, Array((uri + "\n").utf8))
    }
}
