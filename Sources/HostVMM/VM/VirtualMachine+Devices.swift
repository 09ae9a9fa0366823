import AgentProtocol
import Glibc
import LinuxSystem
import ThreadSandbox
import VirtioCore

/// The device thread (issue #16): the vhost-user backends of the virtio keyboard,
/// tablet, mouse, GPU and sound card run on an event loop of their own,
/// "hostvmm-devices", which parses everything QEMU and the guest send them, and
/// which runs under ThreadSandbox.deviceBackends (no exec, no file opens, no
/// sockets) from just after QEMU starts. The VM's loop keeps SPICE, QMP, the agent,
/// the control socket and PulseAudio.
///
/// Ownership: the device objects (VhostUserBackend, the virtio devices, their
/// sinks' device halves) are touched only on the device thread; `inputs`,
/// `display`, `audio` (the containers) only on the VM's loop. Work crosses with
/// `execute` both ways: `onDevices` from the VM's loop and `loop.hop` back. The
/// VM's loop waits for the device thread only while it starts and stops it
/// (`setUpOnDevices`), never while the devices run; the device thread never
/// waits for the VM's loop.
extension VirtualMachine {
    static let deviceThreadName = ThreadSandbox.deviceBackends.name

    /// Starts the device thread if any vhost-user device is asked for. Before the devices.
    func startDeviceThread() throws {
        guard config.inputs || config.display || config.audio.device else { return }
        devices = try LoopThread(name: Self.deviceThreadName)
    }

    /// Runs `body` on the device thread and waits for it (start and stop only).
    func setUpOnDevices<T>(_ body: @escaping () throws -> T) throws -> T {
        guard let devices else { return try body() }
        guard let result = devices.perform(timeoutMilliseconds: 10_000, { Result { try body() } }) else {
            throw SystemError("device thread", "did not answer within 10 s", errno: ETIMEDOUT)
        }
        return try result.get()
    }

    /// A vhost-user backend for `device`, made on the device thread (inside
    /// `setUpOnDevices`), whose log lines and breakage go to the VM's loop: the
    /// breakage as the event `brokenEvent` with `brokenData` and the reason.
    func makeBackend(name: String, device: VirtioDeviceBackend, brokenEvent: String, brokenData: JSONObject = [:])
        -> VhostUserBackend
    {
        let vmLoop = loop
        let backend = VhostUserBackend(name: name, device: device, loop: devices?.loop ?? loop)
        backend.onLog = { [unowned self] line in vmLoop.hop { self.onLog(line) } }
        backend.onBroken = { [unowned self] reason in
            var data = brokenData
            data["reason"] = .string(reason)
            vmLoop.hop { self.emit(VMEvent(name: brokenEvent, data: data)) }
        }
        return backend
    }

    /// A log function for the device thread: lines go to the VM's loop.
    var deviceLog: (String) -> Void {
        let vmLoop = loop
        return { [unowned self] line in vmLoop.hop { self.onLog(line) } }
    }

    /// Runs `work` on the device thread, then `done` with its result on the VM's loop.
    func onDevices<T>(_ work: @escaping () -> T, then done: @escaping (T) -> Void) {
        guard let devices else { return done(work()) }
        let vmLoop = loop
        devices.loop.hop {
            let result = work()
            vmLoop.hop { done(result) }
        }
    }

    /// Runs `work` on the device thread, answering nothing.
    func onDevices(_ work: @escaping () -> Void) {
        guard let devices else { return work() }
        devices.loop.hop(work)
    }

    /// Filters the device thread (after the process filter: see start()).
    func sandboxDeviceThread() {
        guard config.sandbox, devices != nil else { return }
        let outcome = try? setUpOnDevices { ThreadSandbox.apply(ThreadSandbox.deviceBackends) }
        switch outcome {
        case .success(let installed)?:
            onLog("sandbox: the device thread may only use \(installed.namedSyscalls) system calls (no exec, file opens or sockets)")
        case .failure(let failure)?:
            deviceSandboxFailure = failure
            onLog("sandbox: \(failure); the device thread runs unfiltered")
        case nil:
            deviceSandboxFailure = .refusedByKernel(profile: Self.deviceThreadName, errno: ETIMEDOUT)
            onLog("sandbox: the device thread did not answer; it runs unfiltered")
        }
    }

    /// Closes every backend on the device thread, then ends it. The sockets are
    /// removed here: the filtered thread may not unlink.
    func stopDevices() {
        let sockets = inputs.values.map(\.socketPath) + [display?.socketPath, audio?.socketPath].compactMap { $0 }
        let backends = inputs.values.map(\.backend) + [display?.backend, audio?.backend].compactMap { $0 }
        let audio = self.audio
        _ = try? setUpOnDevices {
            audio?.deviceHost.stopClock()
            for backend in backends { backend.close() }
        }
        audio?.stopCapture()
        for path in sockets { unlink(path) }
        inputs = [:]
        display?.console?.close()
        display?.spice?.close()
        display = nil
        self.audio = nil
        devices?.stop()
        devices = nil
    }
}
