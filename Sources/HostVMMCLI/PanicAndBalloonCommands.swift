import AgentProtocol
import ArgumentParser
import Foundation
import HostVMM
import LinuxSystem
import pvpanic

struct BalloonCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "balloon",
        abstract: "Show the guest's memory balloon and statistics, or set its memory target.",
        discussion: """
            hostvmm balloon [NAME]           actual size, target and the guest's memory statistics
            hostvmm balloon [NAME] SIZE      set the guest's memory target (e.g. 256M); the host
                                             gets the difference back (guest RAM is a shared memfd)
            The target must lie between 64 MiB and the VM's memory.
            """)
    @Argument(help: "[NAME] [SIZE]") var words: [String] = []
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        guard words.count <= 2 else { throw ValidationError("expected [NAME] [SIZE]") }
        // One word: a size if it starts with a digit, else a VM name.
        var name = VMConfig.defaultName
        var size: String?
        if words.count == 2 {
            name = words[0]
            size = words[1]
        } else if let w = words.first {
            if w.first?.isNumber == true { size = w } else { name = w }
        }
        let client = connect(try VMSelection.parse([name]))
        if let size {
            let bytes: UInt64
            do { bytes = try VMConfig.parseSize(size) } catch { fail("\(error)") }
            _ = execute(client, "balloon", ["bytes": .int(Int64(bytes))], timeout: 30)
        }
        let info = execute(client, "query-balloon", timeout: 30)
        if json {
            printJSON(info)
            return
        }
        func human(_ v: JSONValue?) -> String { v?.int64Value.map { "\(ByteCount($0))" } ?? "-" }
        var lines = ["memory   \(human(info["memory-bytes"]))", "actual   \(human(info["actual-bytes"]))"]
        if info["target-bytes"] != nil { lines.append("target   \(human(info["target-bytes"]))") }
        if case .object(let stats)? = info["guest-stats"], !stats.isEmpty {
            lines.append("guest:")
            for m in stats.members {
                let counts = m.key.hasSuffix("faults") || m.key == "oom-kills"
                lines.append("  \(m.key.padding(toLength: 13, withPad: " ", startingAt: 0)) \(counts ? "\(m.value.int64Value ?? 0)" : human(m.value))")
            }
        } else {
            lines.append("guest statistics: none yet (the guest reports every 2 s once its driver runs)")
        }
        _ = Syscall.writeAll(fd: 1, Array((lines.joined(separator: "\n") + "\n").utf8))
    }
}

struct CrashesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "crashes", abstract: "List a VM's crash bundles (works after the VM is gone).")
    @OptionGroup var vm: VMSelection
    @Flag(help: "Print JSON.") var json = false

    func run() {
        let store = CrashStore(stateDirectory: StateDirectory.forVM(vm.name).path)
        let bundles = store.list()
        if json {
            printJSON(.array(bundles.map { b in
                .object(["bundle": .string(b.path), "event": b.event ?? .null, "summary": b.summary.map { .string($0) } ?? .null])
            }))
            return
        }
        guard !bundles.isEmpty else {
            _ = Syscall.writeAll(fd: 1, Array("no crash bundles for VM '\(vm.name)' (\(store.root))\n".utf8))
            return
        }
        var out = ""
        for b in bundles {
            let action = b.event?["action"]?.stringValue ?? "?"
            out += "\(b.path)\n  \(b.summary ?? "(no panic line)")\n  action: \(action)\n"
        }
        _ = Syscall.writeAll(fd: 1, Array(out.utf8))
    }
}

struct VMCoreCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vmcore",
        abstract: "Write a vmcore of a VM's guest now (paused for the copy, then resumed).",
        discussion: """
            An ELF core in the layout of QEMU's (gdb -c reads it), as a crash bundle's: every vCPU's registers
            (QEMU's notes) and all of guest RAM at its physical addresses. By default hostvmm
            copies RAM from its own memfd, sparse (untouched and zero pages stay holes);
            --method dump-guest-memory has QEMU write it instead (also for --format kdump-zlib).
            Prints where it went, its size, the disk space it takes and how long it took.
            """)
    @OptionGroup var vm: VMSelection
    @Option(help: "guest-memory (default for ELF) or dump-guest-memory (QEMU).") var method: String?
    @Option(help: "elf (default) or kdump-zlib.") var format: String?
    @Option(name: .shortAndLong, help: "Where to write it (must not exist); default: in the VM's state directory.")
    var output: String?
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        var args: JSONObject = [:]
        if let method { args["method"] = .string(method) }
        if let format { args["format"] = .string(format) }
        if let output {
            args["path"] = .string(output.hasPrefix("/") ? output : FileManager.default.currentDirectoryPath + "/" + output)
        }
        let info = execute(connect(vm), "vmcore", args, timeout: 600)
        if json {
            printJSON(info)
            return
        }
        func mib(_ v: JSONValue?) -> String { v?.int64Value.map { "\(ByteCount($0))" } ?? "-" }
        let line = "\(info["path"]?.stringValue ?? "?"): \(mib(info["bytes"])), \(mib(info["allocated-bytes"])) on disk, "
            + "\(info["seconds"]?.doubleValue ?? 0) s (\(info["method"]?.stringValue ?? "?"))\n"
        _ = Syscall.writeAll(fd: 1, Array(line.utf8))
    }
}
