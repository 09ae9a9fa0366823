import AgentProtocol
import Foundation
import LinuxSystem
import pvpanic

/// How much of guest memory a crash bundle keeps (`--vmcore`).
public enum VMCoreFormat: String, Sendable, CaseIterable {
    case elf
    case kdump = "kdump-zlib"
    case none
}

/// Panic settings for one VM.
public struct PanicSettings: Sendable {
    public var policy: PanicPolicy = .restart
    public var keepBundles: Int = 5
    public var vmcore: VMCoreFormat = .elf

    public init(policy: PanicPolicy = .restart, keepBundles: Int = 5, vmcore: VMCoreFormat = .elf) {
        self.policy = policy
        self.keepBundles = keepBundles
        self.vmcore = vmcore
    }
}

/// Reacts to pvpanic events (architecture.md §3, "Panic"): QEMU pauses the
/// guest on a panic (-action panic=pause), we capture the bundle while it is
/// frozen (registers, console tail, vmcore), then apply the policy.
final class PanicHandler {
    private unowned let vm: VirtualMachine
    let settings: PanicSettings
    let store: CrashStore
    private var loopGuard = CrashLoopGuard()
    private var capture: Capture?
    /// The most recent bundle, for status.
    private(set) var lastBundle: String?

    private struct Capture {
        var bundle: String
        var event: PanicEvent
        var started: UInt64
        var hostTime: Date
        var summary: String?
        var registers: String = ""
        var vmcore: JSONObject = [:]
        /// What could not be written (a full disk): the bundle says so and the event is crash-capture-failed.
        var errors: [String] = []
    }

    /// Writes one bundle file; a failure is recorded, not thrown: the capture and the policy go on.
    @discardableResult
    private func write(_ bytes: [UInt8], _ file: String) -> Bool {
        guard let c = capture else { return false }
        do { try store.write(bytes, to: c.bundle, file: file) } catch {
            capture!.errors.append("\(error)")
            return false
        }
        return true
    }

    init(vm: VirtualMachine, settings: PanicSettings) {
        self.vm = vm
        self.settings = settings
        self.store = CrashStore(stateDirectory: vm.state.path, keep: settings.keepBundles)
    }

    /// Routes the QMP events that concern panics; false for the others.
    func handle(_ event: QMPEvent) -> Bool {
        if event.name == "DUMP_COMPLETED" {
            vm.vmcoreDump?.qemuDumpCompleted(event.data)
            return true
        }
        guard let panic = PanicEvent.decode(qmpEvent: event.name, data: event.data) else { return false }
        switch panic {
        case .shutdownAnnounced:
            vm.onLog("the guest announced a clean poweroff (pvpanic)")
        case .crashLoaded, .panicked:
            begin(panic)
        }
        return true
    }

    private func begin(_ panic: PanicEvent) {
        guard capture == nil else {
            vm.onLog("another panic report while capturing; ignored")
            return
        }
        let bundle: String
        do {
            bundle = try store.create(kind: panic.kind)
        } catch {
            vm.onLog("cannot create a crash bundle: \(error); applying the policy without one")
            apply(panic, bundle: nil)
            return
        }
        let console = FileIO.readBytes(vm.state.consoleLog) ?? []
        let tail = ConsoleTail.tail(console)
        let summary = ConsoleTail.summary(String(decoding: tail, as: UTF8.self))
        capture = Capture(bundle: bundle, event: panic, started: EventLoop.now(), hostTime: Date(), summary: summary)
        vm.onLog("guest \(panic.kind): \(summary ?? "no panic line on the console"); capturing \(bundle)")
        write(tail, "console.txt")
        write(Array(((summary ?? "") + "\n").utf8), "summary.txt")
        vm.qmp?.execute("human-monitor-command", arguments: ["command-line": "info registers -a"]) { [weak self] result in
            guard let self, self.capture != nil else { return }
            switch result {
            case .success(let text): self.capture!.registers = text.stringValue ?? ""
            case .failure(let e): self.capture!.registers = "registers unavailable: \(e)\n"
            }
            self.write(Array(self.capture!.registers.utf8), "registers.txt")
            self.dumpMemory()
        }
    }

    /// The vmcore (VMCoreDump: from hostvmm's copy of guest RAM for ELF, else QEMU's
    /// dump-guest-memory), written while QMP and the control socket keep serving. A
    /// crash-loaded guest runs on, so no dump then.
    private func dumpMemory() {
        guard let c = capture else { return }
        guard settings.vmcore != .none, case .panicked = c.event else {
            capture!.vmcore = ["format": "none"]
            finish()
            return
        }
        let method = vm.defaultVMCoreMethod(for: settings.vmcore)
        vm.dumpVMCore(path: "\(c.bundle)/vmcore", method: method, format: settings.vmcore) { [weak self] result in
            guard let self, self.capture != nil else { return }
            switch result {
            case .success(let info): self.capture!.vmcore = info
            case .failure(let e):
                // A full disk ("No space left on device"): nothing half-written stays behind.
                self.capture!.vmcore = ["format": .string(self.settings.vmcore.rawValue), "method": .string(method.rawValue),
                                        "error": .string(e.description)]
                self.capture!.errors.append("vmcore: \(e)")
            }
            self.finish()
        }
    }

    private func finish() {
        guard let c = capture else { return }
        let action = apply(c.event, bundle: c.bundle)
        let seconds = Double(EventLoop.now() - c.started) / 1000
        var event: JSONObject = [
            "kind": .string(c.event.kind),
            "host-time": .string(ISO8601DateFormatter().string(from: c.hostTime)),
            "policy": .string(settings.policy.rawValue),
            "action": .string(action),
            "vmcore": .object(c.vmcore),
            "capture-seconds": .double((seconds * 100).rounded() / 100),
        ]
        if case .panicked(let qemuAction) = c.event { event["qemu-action"] = .string(qemuAction) }
        if let s = c.summary { event["summary"] = .string(s) }
        // The bundle is only a bundle once event.json is written; it says what is missing.
        event["complete"] = .bool(c.errors.isEmpty)
        if !c.errors.isEmpty { event["errors"] = .array(c.errors.map { .string($0) }) }
        let eventWritten = write(JSONWriter.encode(.object(event)) + [0x0A], "event.json")
        let errors = capture!.errors
        capture = nil
        var bundle: String?
        if eventWritten {
            do { bundle = try store.commit(c.bundle) } catch { vm.onLog("crash bundle not kept: \(error)") }
        }
        if bundle == nil { store.discard(c.bundle) }
        if let bundle {
            lastBundle = bundle
            if settings.policy == .preserve { try? store.markPreserved(bundle) }
        }
        for removed in store.prune() { vm.onLog("removed old crash bundle \(removed)") }
        var announce: JSONObject = ["bundle": bundle.map { .string($0) } ?? .null, "kind": .string(c.event.kind),
                                    "action": .string(action)]
        if let s = c.summary { announce["summary"] = .string(s) }
        if errors.isEmpty {
            vm.emit(VMEvent(name: "crash-captured", data: announce))
        } else {
            // A full disk, say: the policy was applied all the same; the bundle (if its
            // event.json fitted) holds what was written and lists what was not.
            announce["errors"] = .array(errors.map { .string($0) })
            vm.onLog("crash capture incomplete: \(errors.joined(separator: "; "))")
            vm.emit(VMEvent(name: "crash-capture-failed", data: announce))
        }
    }

    /// Applies the policy; returns what was done, for the bundle and the event.
    @discardableResult
    private func apply(_ event: PanicEvent, bundle: String?) -> String {
        guard case .panicked = event else { return "none (the guest's kdump kernel takes over)" }
        let loop = loopGuard.record(at: Date().timeIntervalSince1970)
        switch settings.policy.action(crashLoop: loop) {
        case .reset:
            vm.onLog("restarting the guest after its panic")
            vm.qmp?.execute("system_reset") { [weak self] _ in self?.vm.qmp?.execute("cont") }
            return "restart"
        case .stayPaused(let reason):
            vm.onLog("the guest stays paused (\(reason)); 'hostvmm down \(vm.config.name)' ends it")
            if loop { vm.emit(VMEvent(name: "crash-loop", data: ["panics": .int(Int64(loopGuard.recentCount))])) }
            return "paused: \(reason)"
        case .powerOff:
            vm.onLog("stopping the VM after its panic (--on-panic poweroff)")
            vm.exitReason = "the guest panicked"
            vm.forceStop()
            return "poweroff"
        }
    }
}
