import AgentProtocol
import ArgumentParser
import HostVMM
import LinuxSystem

struct LockCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lock",
        abstract: "Lock the guest's user sessions (through logind, by our guest agent).",
        discussion: """
            Asks the guest agent (\(QGAExtensions.lockScreen)) to lock every user session
            through systemd-logind and prints the sessions it locked. logind signals the
            session's screen locker; a guest without logind answers with an error.
            The agent also locks by itself when the SPICE client disconnects (see
            guest-agent --help: --no-lock-on-disconnect, --lock-grace).
            """)
    @OptionGroup var vm: VMSelection
    @Flag(help: "Print the agent's reply as JSON.") var json = false
    @Option(help: "Seconds to wait for the agent.") var timeout: Double = 15

    func run() {
        let ms = Int64(max(1, min(timeout, 3600)) * 1000)
        let result = execute(connect(vm), "lock", ["timeout-ms": .int(ms)], timeout: timeout + 10)
        if json { return printJSON(result) }
        let sessions = result["sessions"]?.arrayValue ?? []
        var lines = sessions.isEmpty ? ["no user sessions to lock"] : []
        for s in sessions {
            let tty = s["tty"]?.stringValue ?? ""
            let seat = s["seat"]?.stringValue ?? ""
            lines.append("locked session \(s["id"]?.stringValue ?? "?") of \(s["user"]?.stringValue ?? "?")"
                         + (seat.isEmpty ? "" : " on \(seat)") + (tty.isEmpty ? "" : " (\(tty))"))
        }
        _ = Syscall.writeAll(fd: 1, Array((lines.joined(separator: "\n") + "\n").utf8))
    }
}
