import AgentProtocol
import ArgumentParser
import HostVMM

struct AudioCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audio",
        abstract: "Show a VM's sound: the guest's playback and capture streams (format, state, underruns) and where they go (SPICE, PulseAudio).")
    @OptionGroup var vm: VMSelection
    /// Test hook (HOSTVMM_TEST_HOOKS=1): requests=N, transfers=N or chain.
    @Option(help: .hidden) var debugCorrupt: String?

    func run() {
        let client = connect(vm)
        if let debugCorrupt {
            let parts = debugCorrupt.split(separator: "=")
            let value: JSONValue = parts.count == 2 ? .int(Int64(parts[1]) ?? 0) : .bool(true)
            printJSON(execute(client, "audio-debug-corrupt", [String(parts[0]): value]))
            return
        }
        printJSON(execute(client, "query-audio"))
    }
}
