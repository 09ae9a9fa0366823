import AgentProtocol
import Foundation
import LinuxSystem

/// Graceful shutdown and reboot (architecture.md §3): success is what QEMU
/// reports (SHUTDOWN, RESET, or QEMU's exit), never the agent's silence.
extension VirtualMachine {
    public enum ShutdownMode: String, Sendable {
        case agent, acpi
    }

    public enum ShutdownAction: String, Sendable {
        case powerdown, reboot, halt
    }

    enum ShutdownSignal {
        case shutdownEvent, resetEvent, qemuExited, agentPortClosed
    }

    struct ShutdownWaiter {
        var id: UInt64
        var action: ShutdownAction
        var started: UInt64
        var timer: TimerHandle
        var completion: (Result<JSONValue, ControlError>) -> Void
    }

    static let shutdownTimeoutMs: UInt64 = 90_000

    /// Asks the guest to power off, halt or reboot. `mode` nil: the agent when
    /// it is ready, else ACPI.
    func shutdown(mode requested: ShutdownMode?, action: ShutdownAction,
                  completion: @escaping (Result<JSONValue, ControlError>) -> Void)
    {
        let mode = requested ?? (agent.isReady || !config.acpi ? .agent : .acpi)
        guard let qemu, qemu.isRunning else {
            completion(.failure(.generic("the VM is not running")))
            return
        }
        if mode == .acpi && !config.acpi {
            completion(.failure(.generic("this VM runs without ACPI (--no-acpi): use --mode agent")))
            return
        }
        if mode == .acpi && action != .powerdown {
            completion(.failure(.generic("ACPI can only request a power-off; use --mode agent to \(action.rawValue)")))
            return
        }
        let id = UInt64.random(in: 1...UInt64.max)
        let timer = loop.schedule(afterMilliseconds: Self.shutdownTimeoutMs) { [weak self] in
            self?.finishShutdownWaiter(id, .failure(.generic(
                "the guest did not \(action.rawValue) within \(Self.shutdownTimeoutMs / 1000) s (mode \(mode.rawValue))")))
        }
        shutdownWaiters.append(ShutdownWaiter(id: id, action: action, started: EventLoop.now(), timer: timer,
                                              completion: completion))
        if action != .reboot { phase = .stopping }
        onLog("shutdown requested: \(action.rawValue) via \(mode.rawValue)")
        switch mode {
        case .acpi:
            guard let qmp else {
                finishShutdownWaiter(id, .failure(.generic("QEMU monitor not connected")))
                return
            }
            qmp.execute("system_powerdown") { [weak self] result in
                if case .failure(let e) = result { self?.finishShutdownWaiter(id, .failure(.qmp(e))) }
            }
        case .agent:
            let request = QGARequest(execute: "guest-shutdown", arguments: ["mode": .string(action.rawValue)])
            // Silent on success; an error reply, if any, comes within this bound.
            agent.send(request, expectsReply: false, timeoutMs: 3000) { [weak self] result in
                if case .failure(let e) = result { self?.finishShutdownWaiter(id, .failure(.agent(e))) }
            }
        }
    }

    func resolveShutdownWaiters(on signal: ShutdownSignal) {
        for waiter in shutdownWaiters {
            let done: Bool
            switch (waiter.action, signal) {
            case (_, .qemuExited): done = true
            case (.powerdown, .shutdownEvent), (.halt, .shutdownEvent): done = true
            case (.reboot, .resetEvent): done = true
            // A halted guest stops without telling QEMU; its agent's port closing is the sign.
            case (.halt, .agentPortClosed): done = true
            default: done = false
            }
            guard done else { continue }
            let seconds = Double(EventLoop.now() - waiter.started) / 1000
            let event: String
            switch signal {
            case .shutdownEvent: event = "shutdown"
            case .resetEvent: event = "reset"
            case .qemuExited: event = "qemu-exited"
            case .agentPortClosed: event = "agent-port-closed"
            }
            finishShutdownWaiter(waiter.id, .success(.object([
                "action": .string(waiter.action.rawValue), "observed": .string(event),
                "seconds": .double((seconds * 100).rounded() / 100),
            ])))
        }
    }

    func finishShutdownWaiter(_ id: UInt64, _ result: Result<JSONValue, ControlError>) {
        guard let i = shutdownWaiters.firstIndex(where: { $0.id == id }) else { return }
        let waiter = shutdownWaiters.remove(at: i)
        loop.cancel(waiter.timer)
        waiter.completion(result)
    }
}
