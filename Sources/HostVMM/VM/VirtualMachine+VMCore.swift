import AgentProtocol
import Glibc
import LinuxSystem

/// vmcores on request (`hostvmm vmcore`, the control command `vmcore`) and for crash
/// bundles (PanicHandler): one at a time, of a paused guest.
extension VirtualMachine {
    /// The method a vmcore in `format` takes unless told: from hostvmm's copy of guest
    /// RAM for ELF, QEMU's dump-guest-memory for kdump-zlib (only QEMU writes that here).
    func defaultVMCoreMethod(for format: VMCoreFormat) -> VMCoreDump.Method {
        format == .elf && guestRAM != nil ? .guestMemory : .qemu
    }

    /// Writes a vmcore of the (already paused) guest to `path`, which must not exist.
    func dumpVMCore(path: String, method: VMCoreDump.Method, format: VMCoreFormat,
                    completion: @escaping VMCoreDump.Completion)
    {
        guard vmcoreDump == nil else {
            return completion(.failure(VMCoreDumpError(message: "a vmcore is already being written")))
        }
        guard access(path, F_OK) != 0 else {
            return completion(.failure(VMCoreDumpError(message: "\(path) exists; a vmcore never replaces a file")))
        }
        let dump = VMCoreDump(vm: self, path: path, method: method, format: format) { [unowned self] result in
            self.vmcoreDump = nil
            completion(result)
        }
        vmcoreDump = dump
        dump.start()
    }

    /// `vmcore` {"method"?, "format"?, "path"?}: pauses a running guest, writes the core,
    /// resumes it. The default path is in the state directory (0700).
    func vmcoreCommand(_ args: JSONObject, _ done: @escaping (Result<JSONValue, ControlError>) -> Void) {
        let format: VMCoreFormat
        switch args["format"]?.stringValue {
        case nil, "elf": format = .elf
        case "kdump-zlib": format = .kdump
        default: return done(.failure(.generic("'format' must be elf or kdump-zlib")))
        }
        var method = defaultVMCoreMethod(for: format)
        if let name = args["method"] {
            guard let m = name.stringValue.flatMap(VMCoreDump.Method.init(rawValue:)) else {
                return done(.failure(.generic("'method' must be guest-memory or dump-guest-memory")))
            }
            method = m
        }
        if method == .guestMemory && format != .elf {
            return done(.failure(.generic("guest-memory writes ELF cores; kdump-zlib takes method dump-guest-memory")))
        }
        if method == .guestMemory && guestRAM == nil {
            return done(.failure(.generic("hostvmm does not hold this guest's RAM; use method dump-guest-memory")))
        }
        var path = "\(state.path)/vmcore-\(time(nil))-\(method.rawValue)"
        if let p = args["path"] {
            guard let s = p.stringValue, s.hasPrefix("/") else { return done(.failure(.generic("'path' must be absolute"))) }
            path = s
        }
        guard phase == .running || phase == .paused else {
            return done(.failure(.generic("the VM is \(phase.rawValue); a vmcore needs a running or paused guest")))
        }
        let resume = phase == .running
        let dump = { [unowned self] in
            self.dumpVMCore(path: path, method: method, format: format) { [unowned self] result in
                if resume { self.qmp?.execute("cont") }
                switch result {
                case .failure(let e): done(.failure(.generic("vmcore: \(e)")))
                case .success(var info):
                    info["path"] = .string(path)
                    done(.success(.object(info)))
                }
            }
        }
        guard resume else { return dump() }
        qmp?.execute("stop") { result in
            if case .failure(let e) = result { return done(.failure(.qmp(e))) }
            dump()
        }
    }
}
