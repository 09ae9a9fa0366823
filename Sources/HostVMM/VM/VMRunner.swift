import AgentProtocol
import Foundation
import LinuxSystem

/// Runs one VM in this process until QEMU exits: the body of `hostvmm up`.
public enum VMRunner {
    /// Returns the process exit status: 0 when QEMU exited cleanly (a guest
    /// poweroff, a shutdown, `down`), 1 when it failed or was killed.
    public static func run(config: VMConfig, state: StateDirectory, printEvents: Bool = true) -> Int32 {
        signal(SIGPIPE, SIG_IGN)
        let loop: EventLoop
        do {
            loop = try EventLoop()
        } catch {
            say("cannot create the event loop: \(error)")
            return 1
        }
        let vm = VirtualMachine(config: config, state: state, loop: loop)
        var exitCode: Int32 = 1
        vm.onLog = { say($0) }
        if printEvents {
            vm.onEvent = { event in
                emitLine("event: \(JSONWriter.string(event.json))")
            }
        }
        vm.onStopped = { status in
            exitCode = status.isSuccess ? 0 : 1
            loop.stop()
        }
        var interrupts = 0
        let relay: SignalRelay
        do {
            relay = try SignalRelay(loop: loop) { sig in
                interrupts += 1
                if interrupts > 1 || sig == SIGHUP {
                    say("stopping QEMU now")
                    vm.forceStop()
                    return
                }
                say("shutting the guest down (interrupt again to force)")
                vm.shutdown(mode: nil, action: .powerdown) { result in
                    if case .failure(let e) = result {
                        say("graceful shutdown failed: \(e); stopping QEMU")
                        vm.forceStop()
                    }
                }
            }
            try vm.start()
        } catch {
            say("cannot start VM '\(config.name)': \(error)")
            return 1
        }
        loop.run()
        withExtendedLifetime(relay) {}
        return exitCode
    }

    static func say(_ line: String) {
        emitLine("hostvmm: \(line)")
    }

    /// Unbuffered, so a reader piping our output sees each line at once.
    static func emitLine(_ line: String) {
        _ = Syscall.writeAll(fd: 1, Array((line + "\n").utf8))
    }
}
