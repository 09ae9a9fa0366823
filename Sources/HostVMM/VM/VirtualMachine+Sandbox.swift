import AgentProtocol
import Foundation
import SpiceBridge
import ThreadSandbox

/// seccomp (issue #16): QEMU under its own -sandbox (QEMUCommandLine.sandbox), hostvmm
/// under ThreadSandbox.hostvmmProcess once QEMU runs, spice-server's worker thread
/// under ThreadSandbox.spiceWorker (set up with the display) and the device thread
/// under ThreadSandbox.deviceBackends (VirtualMachine+Devices). --no-sandbox: none of them.
extension VirtualMachine {
    func sandboxProcess() {
        let network = Self.needsNetwork(config.audio)
        switch ThreadSandbox.applyToProcess(ThreadSandbox.hostvmmProcess, allowNetwork: network) {
        case .success(let installed):
            onLog("sandbox: hostvmm may no longer start processes or programs"
                  + (network ? "" : " or open network sockets") + " (\(installed.namedSyscalls) system calls refused)")
        case .failure(let failure):
            sandboxFailure = failure
            onLog("sandbox: \(failure); hostvmm runs unfiltered")
        }
    }

    /// Once QEMU runs, hostvmm's own sockets are all open (SPICE listens, clients are
    /// accepted, not created), and PulseAudio is reached over a unix socket, unless the
    /// person named a TCP server (`--pulse-server`, PULSE_SERVER): only then may the
    /// process create network sockets (libpulse reconnects from its own thread).
    static func needsNetwork(_ audio: AudioSetup) -> Bool {
        guard audio.device, audio.pulse != .off else { return false }
        guard let server = audio.pulseServer ?? ProcessInfo.processInfo.environment["PULSE_SERVER"], !server.isEmpty
        else { return false }
        return server.split(separator: " ").contains { !($0.hasPrefix("/") || $0.hasPrefix("unix:")) }
    }

    /// What runs under seccomp, as the kernel reports it (/proc/PID/status "Seccomp: 2").
    func sandboxJSON() -> JSONValue {
        var qemu: JSONObject = ["enabled": .bool(config.sandbox)]
        if config.sandbox { qemu["options"] = .string(QEMUCommandLine.sandbox) }
        if let pid = qemuPID, let mode = Self.seccompMode("/proc/\(pid)/status") { qemu["seccomp-mode"] = .int(Int64(mode)) }
        var process: JSONObject = ["enabled": .bool(ThreadSandbox.processInstalled != nil)]
        if let p = ThreadSandbox.processInstalled {
            process["refused-syscalls"] = .int(Int64(p.namedSyscalls))
            process["network-sockets"] = .bool(Self.needsNetwork(config.audio))
        }
        if let mode = Self.seccompMode("/proc/self/status") { process["seccomp-mode"] = .int(Int64(mode)) }
        if let failure = sandboxFailure { process["error"] = .string(failure.description) }
        var threads: [JSONValue] = ThreadSandbox.installed.map {
            .object(["thread": .string($0.profile), "tid": .int(Int64($0.threadID)),
                     "allowed-syscalls": .int(Int64($0.namedSyscalls))])
        }
        if let failure = SpiceDisplay.workerSandboxFailure {
            threads.append(.object(["thread": .string(ThreadSandbox.spiceWorker.name), "error": .string(failure.description)]))
        }
        if let failure = deviceSandboxFailure {
            threads.append(.object(["thread": .string(ThreadSandbox.deviceBackends.name), "error": .string(failure.description)]))
        }
        return .object(["qemu": .object(qemu), "hostvmm": .object(process), "threads": .array(threads)])
    }

    /// The "Seccomp:" line of a /proc status file: 0 none, 1 strict, 2 filter.
    static func seccompMode(_ statusFile: String) -> Int? {
        guard let text = try? String(contentsOfFile: statusFile, encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("Seccomp:") {
            return Int(line.dropFirst("Seccomp:".count).trimmingCharacters(in: .whitespaces))
        }
        return nil
    }

    /// `sandbox-probe` (HOSTVMM_TEST_HOOKS=1 only): on the VM's loop thread, tries what
    /// the process filter refuses and reports the errno of each (0: allowed): fork,
    /// posix_spawn of /bin/true, an AF_INET and an AF_UNIX socket, and execve (tried only
    /// once the filter is known to be on: without it, execve would replace hostvmm). Then,
    /// under "device-thread", what the device thread's allow-list refuses there: opening a
    /// file and an AF_UNIX socket (execve is left out: unfiltered, it would replace hostvmm).
    func sandboxProbe(_ done: @escaping (Result<JSONValue, ControlError>) -> Void) {
        switch sandboxProbeHere() {
        case .failure(let error): done(.failure(error))
        case .success(var out):
            guard devices != nil else { return done(.success(.object(out))) }
            onDevices({ () -> JSONObject in
                var probe: JSONObject = ["filtered": .bool(ThreadSandbox.isAppliedOnThisThread)]
                let file = open("/etc/hostname", O_RDONLY | O_CLOEXEC)
                probe["open"] = .int(Int64(file < 0 ? errno : 0))
                if file >= 0 { close(file) }
                let unix = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
                probe["socket-unix"] = .int(Int64(unix < 0 ? errno : 0))
                if unix >= 0 { close(unix) }
                return probe
            }) { probe in
                out["device-thread"] = .object(probe)
                done(.success(.object(out)))
            }
        }
    }

    private func sandboxProbeHere() -> Result<JSONObject, ControlError> {
        guard Self.testHooksEnabled else { return .failure(.commandNotFound("sandbox-probe")) }
        guard ThreadSandbox.processInstalled != nil else { return .failure(.generic("hostvmm runs without its filter")) }
        var out: JSONObject = [:]
        let child = fork()
        if child == 0 { _exit(0) }  // only if the filter let it through
        if child > 0 { var status: Int32 = 0; waitpid(child, &status, 0) }
        out["fork"] = .int(Int64(child < 0 ? errno : 0))
        var pid: pid_t = 0
        let argv: [UnsafeMutablePointer<CChar>?] = [strdup("/bin/true"), nil]
        defer { argv.forEach { free($0) } }
        let spawned = posix_spawn(&pid, "/bin/true", nil, nil, argv, environ)
        if spawned == 0 { var status: Int32 = 0; waitpid(pid, &status, 0) }
        out["posix_spawn"] = .int(Int64(spawned))
        let inet = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        out["socket-inet"] = .int(Int64(inet < 0 ? errno : 0))
        if inet >= 0 { close(inet) }
        let unix = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        out["socket-unix"] = .int(Int64(unix < 0 ? errno : 0))
        if unix >= 0 { close(unix) }
        let executed = execve("/bin/true", argv, environ)
        out["execve"] = .int(Int64(executed < 0 ? errno : 0))
        out["EPERM"] = .int(Int64(EPERM))
        return .success(out)
    }
}
