import AgentProtocol
import ArgumentParser
import Foundation
import HostVMM

/// `up`'s options as a definition keeps them: the long option without `--` as the
/// key. Values stay as the person wrote them (numbers may also be JSON numbers);
/// `up` checks them when it boots, as it checks a command line.
enum DefinedOptions {
    enum Kind { case value, repeated, flag, invertible }

    /// Every `up` option a definition may hold (not --name: the definition's own; not
    /// --detach: how one run is started).
    static let kinds: [String: Kind] = {
        var k: [String: Kind] = [:]
        for v in ["image", "memory", "cpus", "accel", "ready-timeout", "agent", "kernel", "initrd", "qemu", "firmware", "cdrom",
                  "on-panic", "spice", "spice-password-file", "spice-tls-cert", "spice-tls-key", "spice-tls-ca", "audio",
                  "pulse-server", "usb-redir", "usb-filter", "net", "keep-crashes", "vmcore"] { k[v] = .value }
        k["forward"] = .repeated
        k["disk"] = .repeated
        for f in ["no-spice", "spice-insecure", "no-acpi", "no-usb", "no-rng", "snapshot", "no-sandbox"] { k[f] = .flag }
        for i in ["inputs", "display"] { k[i] = .invertible }
        return k
    }()

    struct Failure: Error, CustomStringConvertible { var description: String }

    /// A command line's options as a definition's object.
    static func object(from arguments: [String]) throws -> JSONObject {
        var object: JSONObject = [:]
        var i = 0
        while i < arguments.count {
            let word = arguments[i]
            i += 1
            guard word.hasPrefix("--") else { throw Failure(description: "unexpected '\(word)': give up's options (--memory 1G ...)") }
            var key = String(word.dropFirst(2))
            var inline: String?
            if let eq = key.firstIndex(of: "=") {
                inline = String(key[key.index(after: eq)...])
                key = String(key[..<eq])
            }
            let negated = key.hasPrefix("no-") && kinds[key] == nil && kinds[String(key.dropFirst(3))] == .invertible
            if negated { key = String(key.dropFirst(3)) }
            guard let kind = kinds[key] else {
                throw Failure(description: key == "name" || key == "detach"
                    ? "--\(key) does not belong in a definition (the name is define's argument; --detach is how one 'up' runs)"
                    : "unknown option --\(key) ('hostvmm up --help' lists them)")
            }
            func value() throws -> String {
                if let inline { return inline }
                guard i < arguments.count else { throw Failure(description: "--\(key) needs a value") }
                i += 1
                return arguments[i - 1]
            }
            switch kind {
            case .value: object[key] = .string(try value())
            case .repeated:
                var list: [JSONValue] = []
                if case .array(let old)? = object[key] { list = old }
                object[key] = .array(list + [.string(try value())])
            case .flag: object[key] = true
            case .invertible: object[key] = .bool(!negated)
            }
        }
        return object
    }

    /// A definition's object as `up` arguments; a bad key or value names the key.
    static func arguments(from object: JSONObject, file: String) throws -> [String] {
        var args: [String] = []
        for (key, value) in object.members.map({ ($0.key, $0.value) }) {
            guard let kind = kinds[key] else {
                throw Failure(description: "\(file): unknown option '\(key)' ('hostvmm up --help' lists them)")
            }
            func text(_ v: JSONValue) throws -> String {
                switch v {
                case .string(let s): return s
                case .int(let n): return String(n)
                case .double(let d): return String(d)
                default: throw Failure(description: "\(file): '\(key)' must be a string or a number")
                }
            }
            switch kind {
            case .value: args += ["--\(key)", try text(value)]
            case .repeated:
                guard case .array(let items) = value else { throw Failure(description: "\(file): '\(key)' must be a list") }
                for item in items { args += ["--\(key)", try text(item)] }
            case .flag:
                guard case .bool(let on) = value else { throw Failure(description: "\(file): '\(key)' must be true or false") }
                if on { args.append("--\(key)") }
            case .invertible:
                guard case .bool(let on) = value else { throw Failure(description: "\(file): '\(key)' must be true or false") }
                args.append(on ? "--\(key)" : "--no-\(key)")
            }
        }
        return args
    }

    /// `hostvmm up NAME [options]` for a defined NAME: `up --name NAME`, the definition's
    /// options, then the command line's (a later single-value option wins; --forward adds).
    static func expandUp(_ arguments: [String]) -> [String] {
        guard arguments.count >= 2, arguments[0] == "up", !arguments[1].hasPrefix("-") else { return arguments }
        let name = arguments[1]
        do {
            try VMConfig.validate(name: name)
            let definition = try VMDefinition.load(name)
            let defined = try Self.arguments(from: definition.options, file: VMDefinition.path(of: name))
            return ["up", "--name", name] + defined + Array(arguments.dropFirst(2))
        } catch {
            fail("\(error)")
        }
    }
}

struct DefineCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "define",
        abstract: "Keep a VM's 'up' options under a name: 'hostvmm up NAME' then boots it.",
        discussion: """
            Writes \(VMDefinition.directory())/NAME.json (HOSTVMM_CONFIG_DIR moves it): the options \
            given, keyed by their long names. 'hostvmm up NAME --memory 2G' overrides an option for \
            one run; --replace rewrites a definition; 'hostvmm undefine NAME' removes it.
            """)
    @Argument(help: "VM name.") var name: String
    @Flag(help: "Overwrite an existing definition.") var replace = false
    @Argument(parsing: .captureForPassthrough, help: "up's options (hostvmm up --help).") var options: [String] = []

    func validate() throws {
        do { try VMConfig.validate(name: name) } catch { throw ValidationError(error.description) }
    }

    func run() throws {
        let object: JSONObject
        do {
            object = try DefinedOptions.object(from: options)
            // What up would refuse is refused now.
            _ = try UpCommand.parse(["--name", name] + DefinedOptions.arguments(from: object, file: "options"))
        } catch let failure as DefinedOptions.Failure {
            fail(failure.description)
        } catch {
            fail(UpCommand.message(for: error))
        }
        do { try VMDefinition(name: name, options: object).save(replace: replace) } catch { fail(error.description) }
        print("defined '\(name)' in \(VMDefinition.path(of: name)); 'hostvmm up \(name)' boots it")
    }
}

struct UndefineCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "undefine", abstract: "Remove a VM's definition (a running VM keeps running).")
    @Argument(help: "VM name.") var name: String

    func run() throws {
        do { try VMDefinition.remove(name) } catch { fail(error.description) }
        print("undefined '\(name)'")
    }
}

struct ListCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "Every defined and every running VM: state, accelerator, memory, SPICE URI, agent readiness.")
    @Flag(help: "JSON, one object per VM.") var json = false

    func run() throws {
        let root = StateDirectory.root()
        let stateDirs = (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []
        var names = Set(VMDefinition.names())
        for dir in stateDirs where FileManager.default.fileExists(atPath: "\(root)/\(dir)/control.sock") { names.insert(dir) }
        if names.isEmpty && !json {
            print("no VMs defined or running ('hostvmm define NAME' keeps one, 'hostvmm up' boots one)")
            return
        }
        for name in names.sorted() {
            var o: JSONObject = ["name": .string(name), "defined": .bool(VMDefinition.exists(name)), "state": "stopped"]
            if let client = try? ControlClient(vmName: name, state: StateDirectory(path: "\(root)/\(name)")),
                let status = try? client.execute("query-status", arguments: [:], timeout: 10)
            {
                o["state"] = status["state"] ?? "running"
                o["accelerator"] = status["accelerator"]?["kind"] ?? .null
                o["memory-bytes"] = status["memory-bytes"] ?? .null
                o["agent-ready"] = status["agent"]?["ready"] ?? .null
                if let spice = try? client.execute("query-spice", arguments: [:], timeout: 10), let uri = spice["uri"] {
                    o["spice"] = uri
                }
            }
            if json {
                printJSON(.object(o))
            } else {
                let memory = o["memory-bytes"]?.int64Value.map { "\($0 >> 20)M" } ?? "-"
                let agent = o["agent-ready"].map { $0 == .bool(true) ? "agent ready" : "agent not ready" } ?? "-"
                print([name, o["state"]?.stringValue ?? "?", o["defined"] == .bool(true) ? "defined" : "not defined",
                       o["accelerator"]?.stringValue ?? "-", memory, agent, o["spice"]?.stringValue ?? "-"]
                    .joined(separator: "\t"))
            }
        }
    }
}
