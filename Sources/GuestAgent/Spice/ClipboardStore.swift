import AgentProtocol
import LinuxSystem

/// The headless clipboard: what each selection holds and who owns it, for
/// guests without a display. Scripts reach it with `guest-agent clipboard
/// get|set` (ClipboardService). Thread-safe.
final class ClipboardStore: @unchecked Sendable {
    enum Owner {
        case guest, client
    }

    struct Entry {
        var type: VDAgentClipboardType
        var data: [UInt8]
        var owner: Owner
    }

    private let monitor = Monitor()
    private var entries: [VDAgentSelection: Entry] = [:]
    /// Called when a local program sets a selection, so the agent can grab it.
    var onLocalSet: ((VDAgentSelection) -> Void)?

    func get(_ selection: VDAgentSelection) -> Entry? { monitor.withLock { entries[selection] } }

    func set(_ selection: VDAgentSelection, type: VDAgentClipboardType, data: [UInt8], owner: Owner) {
        monitor.withLock { entries[selection] = Entry(type: type, data: data, owner: owner) }
        if owner == .guest { onLocalSet?(selection) }
    }

    /// The client is gone: selections it owned are no longer offered to it,
    /// but what it pasted stays in the guest's clipboard.
    func clientLeft() {
        monitor.withLock {
            for (sel, var e) in entries where e.owner == .client {
                e.owner = .guest
                entries[sel] = e
            }
        }
    }
}
