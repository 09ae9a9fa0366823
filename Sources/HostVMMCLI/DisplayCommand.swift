import AgentProtocol
import ArgumentParser
import HostVMM

struct DisplayCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "display",
        abstract: "Show the virtio-gpu display of a VM started with --display (scanout size, counters, last error).")
    @OptionGroup var vm: VMSelection

    func run() {
        printJSON(execute(connect(vm), "query-display"))
    }
}
