import AgentProtocol
import ArgumentParser
import HostVMM

struct AudioCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audio",
        abstract: "Show a VM's sound: the guest's playback and capture streams (format, state, underruns) and where they go (SPICE, PulseAudio).")
    @OptionGroup var vm: VMSelection

    func run() {
        printJSON(execute(connect(vm), "query-audio"))
    }
}
