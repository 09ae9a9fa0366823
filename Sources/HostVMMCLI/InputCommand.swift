import AgentProtocol
import ArgumentParser
import HostVMM

struct InputCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "input",
        abstract: "Send input to a VM's virtio keyboard, tablet or mouse; without an action, show the devices.",
        discussion: """
            Examples: hostvmm input --key 30 (tap KEY_A); hostvmm input --key 42 --action press;
            hostvmm input --move 16384,16384; hostvmm input --button left; hostvmm input --scroll -1;
            hostvmm input --motion 10,-5 (the relative mouse); --mouse sends --button/--scroll to the mouse
            """)
    @OptionGroup var vm: VMSelection
    @Option(help: "A Linux key code for the keyboard (30 = KEY_A, 58 = KEY_CAPSLOCK).") var key: Int?
    @Option(help: "What to do with --key: press, release or tap.") var action: String = "tap"
    @Option(help: "Move the tablet's pointer to X,Y (each 0-32767).") var move: String?
    @Option(help: "Move the relative mouse by DX,DY.") var motion: String?
    @Option(help: "Press a tablet button: left, right or middle.") var button: String?
    @Flag(help: "--button and --scroll go to the relative mouse instead of the tablet.") var mouse = false
    @Flag(help: "With --button: release it instead.") var release = false
    @Option(help: "Scroll the tablet's wheel by N clicks (positive: up).") var scroll: Int?
    @Option(help: .hidden) var debugCorrupt: String?

    func validate() throws {
        guard ["press", "release", "tap"].contains(action) else { throw ValidationError("--action must be press, release or tap") }
        if let move, Self.pair(move) == nil { throw ValidationError("--move takes X,Y") }
        if let motion, Self.pair(motion) == nil { throw ValidationError("--motion takes DX,DY") }
    }

    /// "A,B" as two integers (nil otherwise).
    static func pair(_ text: String) -> (Int64, Int64)? {
        let parts = text.split(separator: ",", omittingEmptySubsequences: false).map { Int64($0) }
        guard parts.count == 2, let a = parts[0], let b = parts[1] else { return nil }
        return (a, b)
    }

    private var pointer: String { mouse ? "mouse" : "tablet" }

    func run() {
        let client = connect(vm)
        if let device = debugCorrupt {
            printJSON(execute(client, "input-debug-corrupt", ["device": .string(device)]))
            return
        }
        var args: JSONObject
        if let key {
            args = ["device": "keyboard", "key": .int(Int64(key)), "action": .string(action)]
        } else if let move, let xy = Self.pair(move) {
            args = ["device": "tablet", "move": .object(["x": .int(xy.0), "y": .int(xy.1)])]
        } else if let motion, let d = Self.pair(motion) {
            args = ["device": "mouse", "motion": .object(["dx": .int(d.0), "dy": .int(d.1)])]
        } else if let button {
            args = ["device": .string(pointer), "button": .string(button), "pressed": .bool(!release)]
        } else if let scroll {
            args = ["device": .string(pointer), "scroll": .int(Int64(scroll))]
        } else {
            printJSON(execute(client, "query-inputs"))
            return
        }
        printJSON(execute(client, "input-send", args))
    }
}
