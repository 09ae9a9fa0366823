import AgentProtocol
import Glibc
import LinuxSystem
import pvpanic

/// One vmcore being written of a paused guest (issue #17), by one of two paths:
///
/// - `guest-memory` (the default for ELF): QEMU writes only its notes (a
///   `dump-guest-memory` filtered to the first page: every vCPU's registers and
///   QEMU's CPU state, VMCOREINFO when the guest has it), and hostvmm copies RAM
///   from its own memfd (GuestRAM) on a thread of its own, sparse
///   (GuestMemoryDump).
/// - `dump-guest-memory`: QEMU writes the whole core (ELF, or kdump-zlib, which
///   only QEMU writes here), detached, ending with DUMP_COMPLETED; the fallback.
///
/// The completion gets what the bundle records (format, method, sizes, seconds)
/// or an error text; on an error nothing is left at `path`.
final class VMCoreDump {
    enum Method: String {
        case guestMemory = "guest-memory"
        case qemu = "dump-guest-memory"
    }

    typealias Completion = (Result<JSONObject, VMCoreDumpError>) -> Void

    /// Bound for QEMU writing a whole core (a 512 MiB guest takes about a second here).
    static let qemuTimeoutMs: UInt64 = 300_000
    /// Bound for QEMU's notes-only dump.
    static let notesTimeoutMs: UInt64 = 30_000

    private unowned let vm: VirtualMachine
    let path: String
    let method: Method
    let format: VMCoreFormat
    private var completion: Completion?
    private var timer: TimerHandle?
    private let started = EventLoop.now()
    /// QEMU is writing the whole core: its DUMP_COMPLETED ends the dump.
    private var awaitingQEMU = false

    init(vm: VirtualMachine, path: String, method: Method, format: VMCoreFormat, completion: @escaping Completion) {
        self.vm = vm
        self.path = path
        self.method = method
        self.format = format
        self.completion = completion
    }

    /// QEMU's notes-only dump goes to the VM's state directory (0700), never beside a
    /// path a client named, where it could replace a file of theirs. One dump at a time.
    var notesPath: String { "\(vm.state.path)/vmcore-notes.elf" }

    func start() {
        switch method {
        case .qemu: startQEMU()
        case .guestMemory: startNotes()
        }
    }

    private func startQEMU() {
        var args: JSONObject = ["paging": false, "protocol": .string("file:\(path)"), "detach": true]
        if format == .kdump { args["format"] = .string(VMCoreFormat.kdump.rawValue) }
        awaitingQEMU = true
        timer = vm.loop.schedule(afterMilliseconds: Self.qemuTimeoutMs) { [weak self] in self?.fail("timed out") }
        vm.qmp?.execute("dump-guest-memory", arguments: args) { [weak self] result in
            if case .failure(let e) = result { self?.fail(e.description) }
        }
    }

    /// DUMP_COMPLETED from QEMU: the end of a whole-core dump (the notes-only dump ends
    /// with the command's reply instead, so the event is not ours then).
    func qemuDumpCompleted(_ data: JSONObject) {
        guard awaitingQEMU else { return }
        awaitingQEMU = false
        if let error = data["error"]?.stringValue { return fail(error) }
        chmod(path, 0o600)
        var st = stat()
        guard stat(path, &st) == 0 else { return fail("QEMU reported the dump complete, but \(path) is missing") }
        succeed(["bytes": .int(Int64(st.st_size)), "allocated-bytes": .int(Int64(st.st_blocks) * 512)])
    }

    private func startNotes() {
        guard let ram = vm.guestRAM else { return fail("hostvmm does not hold this guest's RAM") }
        timer = vm.loop.schedule(afterMilliseconds: Self.notesTimeoutMs) { [weak self] in
            self?.fail("QEMU did not write the CPU notes within \(Self.notesTimeoutMs / 1000) s")
        }
        let args: JSONObject = ["paging": false, "protocol": .string("file:\(notesPath)"), "begin": 0, "length": 4096]
        vm.qmp?.execute("dump-guest-memory", arguments: args) { [weak self] result in
            guard let self, self.completion != nil else { return }
            self.vm.loop.cancel(self.timer)
            if case .failure(let e) = result { return self.fail("QEMU's notes: \(e.description)") }
            let core = FileIO.readBytes(self.notesPath) ?? []
            unlink(self.notesPath)
            guard let notes = ELFCoreWriter.notes(of: core) else {
                return self.fail("QEMU's notes dump (\(core.count) bytes) is not an ELF core with notes")
            }
            self.copyMemory(ram: ram, notes: notes)
        }
    }

    /// The copy runs on its own thread; the VM's loop keeps serving. `ram` stays
    /// alive with the closure, whatever happens to the VM meanwhile.
    private func copyMemory(ram: GuestRAM, notes: [UInt8]) {
        let path = self.path, loop = vm.loop
        let me = LoopBound(value: self)
        Threads.detach {
            let result = Result { () throws(SystemError) in
                try GuestMemoryDump.write(ramFD: ram.fd, ranges: ram.ranges, notes: notes, to: path)
            }
            withExtendedLifetime(ram) {}
            loop.hop {
                switch result {
                case .failure(let e): me.value?.fail("\(e)")
                case .success(let o):
                    me.value?.succeed(["bytes": .int(Int64(o.fileBytes)), "allocated-bytes": .int(Int64(o.allocatedBytes)),
                                   "copied-bytes": .int(Int64(o.copiedBytes))])
                }
            }
        }
    }

    private func succeed(_ sizes: JSONObject) {
        var info = sizes
        info["format"] = .string(format.rawValue)
        info["method"] = .string(method.rawValue)
        info["seconds"] = .double((Double(EventLoop.now() - started) / 10).rounded() / 100)
        finish(.success(info))
    }

    private func fail(_ error: String) {
        awaitingQEMU = false
        unlink(path)
        unlink(notesPath)
        finish(.failure(VMCoreDumpError(message: error)))
    }

    private func finish(_ result: Result<JSONObject, VMCoreDumpError>) {
        vm.loop.cancel(timer)
        guard let done = completion else { return }
        completion = nil
        done(result)
    }
}

struct VMCoreDumpError: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}
