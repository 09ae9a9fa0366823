import AgentProtocol
import Foundation
import Testing

/// Locking the guest's screen (protocol.md §1.9): on host command and when the
/// SPICE client goes away, against the real logind of the desktop guest, and
/// the documented error on the embedded guest, which has no session manager.
@Suite(.serialized, .timeLimit(.minutes(30))) struct LockTests {
    static let client = SpiceEndToEndTests.client

    @Test func aGuestWithoutLogindAnswersWithTheDocumentedError() throws {
        let vm = try BootedVM(name: "e2e-nolock")
        let info = try vm.agent(#"{"execute":"guest-info"}"#)
        let names = info["return"]?["supported_commands"]?.arrayValue?.compactMap { $0["name"]?.stringValue } ?? []
        #expect(names.contains(QGAExtensions.lockScreen), "guest-info lacks the lock extension")

        let reply = try vm.agent(#"{"execute":"\#(QGAExtensions.lockScreen)"}"#)
        #expect(reply["error"]?["class"]?.stringValue == "GenericError", "\(reply)")
        let desc = reply["error"]?["desc"]?.stringValue ?? ""
        #expect(desc.hasPrefix("cannot lock: the guest has no session manager ("), "\(desc)")
        #expect(desc.contains("/run/dbus/system_bus_socket"), "\(desc)")

        let cli = try vm.cli(["lock", vm.name])
        #expect(cli.status == 1)
        #expect(cli.output.contains("no session manager"), "\(cli.output)")
        #expect(vm.events(named: "guest-locked").isEmpty)
        _ = try vm.cli(["down", vm.name])
        #expect(vm.upExitCode() == 0)
    }

    /// `loginctl show-session -p LockedHint --value` of the tty1 autologin session.
    private func lockedHint(_ vm: BootedVM) throws -> String {
        try vm.guestRun("loginctl show-session $(loginctl list-sessions --no-legend | awk '$NF==\"tty1\" || /tty1/ {print $1; exit}') -p LockedHint --value")
            .output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Polls the guest (no event for LockedHint reaches the host) until it reads `want`, bounded.
    private func waitForLockedHint(_ vm: BootedVM, _ want: String, timeout: TimeInterval) throws -> String {
        let deadline = Date().addingTimeInterval(timeout)
        var last = ""
        while Date() < deadline {
            last = try lockedHint(vm)
            if last == want { return last }
        }
        return last
    }

    /// A spice-gtk client that stays connected (receive mode) until killed.
    private func holdingClient(_ uri: String, _ dir: String, _ label: String) throws -> WatchedProcess {
        let client = try WatchedProcess("/usr/bin/python3", [Self.client, uri, "receive", "\(dir)/\(label)"])
        #expect(client.waitForLine(containing: "ready", timeout: 60) != nil, "\(client.transcript)")
        return client
    }

    @Test func desktopGuestLocksOnCommandAndAfterTheClientLeaves() throws {
        let vm = try BootedVM(name: "e2e-lock", options: ["--image", "desktop"])
        let dir = try TestEnvironment.temporaryDirectory("lock")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(vm.waitForOccurrence("spice-agent-connected", count: 1, timeout: 60), "\(vm.up.transcript)")
        // The autologin session on tty1 exists a few seconds after the agent (bounded).
        #expect(try waitForLockedHint(vm, "no", timeout: 90) == "no", "no unlocked tty1 session")
        let uri = try vm.cli(["spice", vm.name]).output.trimmingCharacters(in: .whitespacesAndNewlines)

        // 1. A client leaves and another is back within the grace period (5 s): no lock.
        let first = try holdingClient(uri, dir, "first")
        first.signal(SIGTERM)
        _ = first.waitForExit(timeout: 10)
        let second = try holdingClient(uri, dir, "second")
        // Waiting for an absence: past the grace period, with margin for TCG.
        #expect(!vm.waitForOccurrence("guest-locked", count: 1, timeout: 12), "locked although a client came back")
        #expect(try lockedHint(vm) == "no")

        // 2. The client leaves for good: locked after the grace period, reported by the host.
        second.signal(SIGTERM)
        _ = second.waitForExit(timeout: 10)
        #expect(vm.waitForOccurrence("guest-locked", count: 1, timeout: 60), "\(vm.up.transcript)")
        let event = try #require(vm.events(named: "guest-locked").first)
        #expect(event["data"]?["reason"]?.stringValue == "spice-client-disconnected")
        let sessions = event["data"]?["sessions"]?.arrayValue ?? []
        #expect(sessions.contains { $0["tty"]?.stringValue == "tty1" && $0["user"]?.stringValue == "root" }, "\(event)")
        // logind emitted Lock; the guest's locker (a Lock subscriber) set LockedHint.
        #expect(try waitForLockedHint(vm, "yes", timeout: 30) == "yes")

        // 3. Unlocked in the guest, then locked from the host.
        #expect(try vm.guestRun("loginctl unlock-sessions").code == 0)
        #expect(try waitForLockedHint(vm, "no", timeout: 30) == "no")
        let cli = try vm.cli(["lock", vm.name])
        #expect(cli.status == 0, "\(cli.output)")
        #expect(cli.output.contains("locked session") && cli.output.contains("(tty1)"), "\(cli.output)")
        #expect(vm.waitForOccurrence("guest-locked", count: 2, timeout: 10))
        #expect(vm.events(named: "guest-locked").last?["data"]?["reason"]?.stringValue == "host-command")
        #expect(try waitForLockedHint(vm, "yes", timeout: 30) == "yes")

        _ = try vm.cli(["down", vm.name])
        #expect(vm.upExitCode() == 0)
    }
}
