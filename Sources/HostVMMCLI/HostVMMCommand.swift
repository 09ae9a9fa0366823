import ArgumentParser
import HostVMM

@main
struct HostVMMCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hostvmm",
        abstract: "Boot Linux VMs under QEMU with a guest agent, SPICE-agent, pvpanic and balloon channels.",
        discussion: """
            'hostvmm up' boots an embedded guest (--image default: busybox; --image desktop:
            Debian 12 with systemd and logind) and supervises it; 'hostvmm define NAME [options]'
            keeps options under a name for 'hostvmm up NAME'; the other
            commands talk to a running VM through its control socket in
            \(StateDirectory.root())/NAME (set HOSTVMM_STATE_DIR to move it).
            """,
        subcommands: [
            UpCommand.self, StatusCommand.self, PingCommand.self, AgentCommand.self, ShutdownCommand.self,
            EventsCommand.self, DownCommand.self, ConsoleCommand.self, BalloonCommand.self, CrashesCommand.self, VMCoreCommand.self,
            SpiceCommand.self, LockCommand.self, InputCommand.self, DisplayCommand.self, AudioCommand.self, USBCommand.self,
            ImageCommand.self, DefineCommand.self, UndefineCommand.self, ListCommand.self,
        ]
    )

    /// `hostvmm up NAME` boots a defined VM: expanded before parsing (DefinedOptions).
    static func main() {
        main(DefinedOptions.expandUp(Array(CommandLine.arguments.dropFirst())))
    }
}

/// The VM a client command talks to: the optional positional name.
struct VMSelection: ParsableArguments {
    @Argument(help: "VM name.")
    var name: String = VMConfig.defaultName

    func validate() throws {
        do { try VMConfig.validate(name: name) } catch { throw ValidationError(error.description) }
    }
}
