import AgentProtocol
import Foundation

/// The control API's commands, one table (protocol.md documents each).
enum ControlCommands {
    typealias Completion = (Result<JSONValue, ControlError>) -> Void
    typealias Handler = @Sendable (VirtualMachine, JSONObject, @escaping Completion) -> Void

    static let table: [String: Handler] = [
        "query-status": { vm, _, done in done(.success(vm.statusJSON())) },
        "agent-ping": agentPing,
        "agent-command": agentCommand,
        "shutdown": shutdown,
        "balloon": { vm, args, done in
            guard let bytes = args["bytes"]?.int64Value else {
                return done(.failure(.generic("'bytes' must be an integer: the guest's memory target")))
            }
            vm.setBalloon(bytes: bytes, completion: done)
        },
        "query-balloon": { vm, _, done in vm.balloonInfo(completion: done) },
        "query-spice": { vm, _, done in done(.success(vm.spiceStatusJSON())) },
        "lock": lock,
        "query-display": { vm, _, done in vm.displayStatus { done(.success($0)) } },
        "display-debug-corrupt": { vm, args, done in vm.displayDebugCorrupt(args, done) },
        "query-audio": { vm, _, done in vm.audioStatus { done(.success($0)) } },
        "audio-debug-corrupt": { vm, args, done in vm.audioDebugCorrupt(args, done) },
        "query-usb": { vm, _, done in done(.success(vm.usbStatusJSON())) },
        "usb-attach": { vm, args, done in vm.usbHostAttach(args, completion: done) },
        "usb-detach": { vm, args, done in done(vm.usbHostDetach(args)) },
        "query-inputs": { vm, _, done in vm.inputsStatus { done(.success($0)) } },
        "input-send": { vm, args, done in vm.inputSend(args, done) },
        "input-debug-corrupt": { vm, args, done in vm.inputDebugCorrupt(args, done) },
        "sandbox-probe": { vm, _, done in vm.sandboxProbe(done) },
        "vmcore": { vm, args, done in vm.vmcoreCommand(args, done) },
        "quit": { vm, _, done in
            vm.forceStop()
            done(.success(.object([:])))
        },
    ]

    private static func timeout(_ args: JSONObject, default value: UInt64) -> Result<UInt64, ControlError> {
        guard let t = args["timeout-ms"] else { return .success(value) }
        guard let ms = t.int64Value, ms > 0, ms <= 3_600_000 else {
            return .failure(.generic("'timeout-ms' must be an integer from 1 to 3600000"))
        }
        return .success(UInt64(ms))
    }

    /// guest-ping through the whole chain; answers with the round trip time.
    private static func agentPing(_ vm: VirtualMachine, _ args: JSONObject, _ done: @escaping Completion) {
        let timeoutMs: UInt64
        switch timeout(args, default: 5000) {
        case .failure(let e): return done(.failure(e))
        case .success(let t): timeoutMs = t
        }
        let start = DispatchTime.now().uptimeNanoseconds
        vm.agent.send(QGARequest(execute: "guest-ping"), timeoutMs: timeoutMs) { result in
            switch result {
            case .failure(let e): done(.failure(.agent(e)))
            case .success:
                let micros = (DispatchTime.now().uptimeNanoseconds - start) / 1000
                done(.success(.object(["round-trip-us": .int(Int64(micros))])))
            }
        }
    }

    /// Raw QGA pass-through, like `virsh qemu-agent-command`: the agent's reply
    /// object (`{"return":...}` or `{"error":...}`) comes back as the return value.
    private static func agentCommand(_ vm: VirtualMachine, _ args: JSONObject, _ done: @escaping Completion) {
        guard case .object(let command)? = args["command"] else {
            return done(.failure(.generic("'command' must be a QGA request object, e.g. {\"execute\":\"guest-info\"}")))
        }
        let request: QGARequest
        switch QGARequest.decode(.object(command)) {
        case .failure(let bad): return done(.failure(.generic("invalid agent request: \(bad.error.desc)")))
        case .success(let r): request = QGARequest(execute: r.execute, arguments: r.arguments)
        }
        if ["guest-sync", "guest-sync-delimited"].contains(request.execute) {
            return done(.failure(.generic("\(request.execute) is hostvmm's own: it synchronises the channel itself")))
        }
        let timeoutMs: UInt64
        switch timeout(args, default: 10_000) {
        case .failure(let e): return done(.failure(e))
        case .success(let t): timeoutMs = t
        }
        let silent = ["guest-shutdown", "guest-suspend-disk", "guest-suspend-ram", "guest-suspend-hybrid"]
            .contains(request.execute)
        vm.agent.send(request, expectsReply: !silent, timeoutMs: silent ? 3000 : timeoutMs) { result in
            switch result {
            case .success(let value): done(.success(.object(["return": value ?? .object([:])])))
            case .failure(.agent(let e)): done(.success(.object(["error": e.json])))
            case .failure(let e): done(.failure(.agent(e)))
            }
        }
    }

    /// Our agent's lock extension (protocol.md §1.9); a `guest-locked` event
    /// reports which sessions it locked.
    private static func lock(_ vm: VirtualMachine, _ args: JSONObject, _ done: @escaping Completion) {
        let timeoutMs: UInt64
        switch timeout(args, default: 15_000) {
        case .failure(let e): return done(.failure(e))
        case .success(let t): timeoutMs = t
        }
        vm.agent.send(QGARequest(execute: QGAExtensions.lockScreen), timeoutMs: timeoutMs) { result in
            switch result {
            case .success(let value):
                var data: JSONObject = ["reason": .string("host-command")]
                if case .object(let reply)? = value {
                    for member in reply.members { data[member.key] = member.value }
                }
                vm.emit(VMEvent(name: "guest-locked", data: data))
                done(.success(value ?? .object([:])))
            case .failure(let e): done(.failure(.agent(e)))
            }
        }
    }

    private static func shutdown(_ vm: VirtualMachine, _ args: JSONObject, _ done: @escaping Completion) {
        var mode: VirtualMachine.ShutdownMode?
        if let m = args["mode"] {
            guard let s = m.stringValue, let parsed = VirtualMachine.ShutdownMode(rawValue: s) else {
                return done(.failure(.generic("'mode' must be \"agent\" or \"acpi\"")))
            }
            mode = parsed
        }
        var action = VirtualMachine.ShutdownAction.powerdown
        if let a = args["action"] {
            guard let s = a.stringValue, let parsed = VirtualMachine.ShutdownAction(rawValue: s) else {
                return done(.failure(.generic("'action' must be \"powerdown\", \"reboot\" or \"halt\"")))
            }
            action = parsed
        }
        vm.shutdown(mode: mode, action: action, completion: done)
    }
}

extension VirtualMachine {
    func statusJSON() -> JSONValue {
        var agentInfo: JSONObject = ["ready": .bool(agentReady)]
        if let s = agentReadySeconds { agentInfo["ready-after-seconds"] = .double((s * 10).rounded() / 10) }
        var pids: JSONObject = ["hostvmm": .int(Int64(getpid()))]
        if let q = qemuPID { pids["qemu"] = .int(Int64(q)) }
        return .object([
            "name": .string(config.name),
            "state": .string(phase.rawValue),
            "accelerator": .object([
                "kind": .string(config.accelerator.kind.rawValue), "reason": .string(config.accelerator.reason),
            ]),
            "agent": .object(agentInfo),
            "pids": .object(pids),
            "state-dir": .string(state.path),
            "memory-bytes": .int(Int64(config.memoryBytes)),
            "cpus": .int(Int64(config.cpus)),
            "uptime-seconds": .double((secondsSinceLaunch * 10).rounded() / 10),
            "sandbox": sandboxJSON(),
            "panic": .object([
                "policy": .string(config.panic.policy.rawValue), "vmcore": .string(config.panic.vmcore.rawValue),
                "keep-bundles": .int(Int64(config.panic.keepBundles)),
                "last-bundle": panics.lastBundle.map { .string($0) } ?? .null,
            ]),
        ])
    }
}
