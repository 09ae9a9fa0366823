import AgentProtocol
import ArgumentParser
import HostVMM

struct DisplayCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "display",
        abstract: "Show the virtio-gpu display of a VM (scanout size, counters, last error).")
    @OptionGroup var vm: VMSelection
    @Option(help: .hidden) var debugCorrupt: Int?

    func run() {
        let client = connect(vm)
        if let debugCorrupt {
            printJSON(execute(client, "display-debug-corrupt", ["count": .int(Int64(debugCorrupt))]))
            return
        }
        printJSON(execute(client, "query-display"))
    }
}
