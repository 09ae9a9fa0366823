import AgentProtocol
import LinuxSystem

/// Lock on SPICE client disconnect (protocol.md §1.9): when the last client
/// goes away (VD_AGENT_CLIENT_DISCONNECTED), the user sessions are locked
/// after a grace period, unless a client is back by then (a new client's
/// ANNOUNCE_CAPABILITIES with request set), so a network blip is not punished.
/// The outcome goes to hostvmm as a HostNotice, which reports it as an event.
final class DisconnectLocker: @unchecked Sendable {
    private let monitor = Monitor()
    /// Bumped by every connect and disconnect: a pending lock runs only if
    /// nothing happened since it was scheduled.
    private var generation = 0
    let graceSeconds: Int
    let busPath: String
    private let notify: @Sendable ([UInt8]) -> Void

    init(graceSeconds: Int, busPath: String, notify: @escaping @Sendable ([UInt8]) -> Void) {
        self.graceSeconds = graceSeconds
        self.busPath = busPath
        self.notify = notify
    }

    func clientConnected() {
        monitor.withLock { generation += 1 }
    }

    func clientDisconnected() {
        let scheduled = monitor.withLock { () -> Int in
            generation += 1
            return generation
        }
        Log.info("SPICE client gone: locking the sessions in \(graceSeconds) s unless it returns")
        Threads.detach { [self] in
            // The grace period itself: a deadline, not a wait for some other event.
            Syscall.pause(milliseconds: Int32(graceSeconds * 1000))
            guard monitor.withLock({ generation == scheduled }) else {
                Log.info("SPICE client back within the grace period: not locking")
                return
            }
            lockNow()
        }
    }

    private func lockNow() {
        var notice: JSONObject = ["reason": "spice-client-disconnected", "grace-seconds": .int(Int64(graceSeconds))]
        do {
            let sessions = try SessionLocker.lockUserSessions(busPath: busPath)
            notice["event"] = "guest-locked"
            notice["method"] = "logind"
            notice["sessions"] = .array(sessions.map(\.json))
            Log.info("locked \(sessions.count) session(s) after the SPICE client left")
        } catch {
            notice["event"] = "guest-lock-failed"
            notice["error"] = .string(error.description)
            Log.info("lock after the SPICE client left failed: \(error)")
        }
        notify(HostNotice.encode(json: JSONWriter.encode(.object(notice))))
    }
}
