import AgentProtocol
import Foundation
import LinuxSystem

/// A defined VM (issue #14): `hostvmm define NAME [up options]` writes one JSON
/// file per VM, `hostvmm up NAME` boots it (command-line options override), `list`
/// shows it, `undefine` removes it.
///
/// File: `DIR/NAME.json`, `{"name": NAME, "options": {"memory": "1G", "inputs": false,
/// "forward": ["tcp:2222:22"], ...}}`, the keys being `up`'s long options without
/// `--`. DIR is `$HOSTVMM_CONFIG_DIR`, else `$XDG_CONFIG_HOME/hostvmm/vms`, else
/// `/etc/hostvmm/vms` for root and `~/.config/hostvmm/vms` for others. Which keys
/// exist and what they hold is the CLI's knowledge (it owns `up`'s options): this
/// type stores and reads them and names the file in every error.
public struct VMDefinition: Sendable, Equatable {
    public var name: String
    public var options: JSONObject

    public init(name: String, options: JSONObject) {
        self.name = name
        self.options = options
    }

    public static func directory(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        if let explicit = environment["HOSTVMM_CONFIG_DIR"], !explicit.isEmpty { return explicit }
        if let xdg = environment["XDG_CONFIG_HOME"], !xdg.isEmpty { return "\(xdg)/hostvmm/vms" }
        if getuid() == 0 { return "/etc/hostvmm/vms" }
        return "\(environment["HOME"] ?? "/tmp")/.config/hostvmm/vms"
    }

    public static func path(of name: String) -> String { "\(directory())/\(name).json" }

    public static func exists(_ name: String) -> Bool { FileManager.default.fileExists(atPath: path(of: name)) }

    /// Every defined VM's name, sorted.
    public static func names() -> [String] {
        let files = (try? FileManager.default.contentsOfDirectory(atPath: directory())) ?? []
        return files.filter { $0.hasSuffix(".json") }.map { String($0.dropLast(5)) }
            .filter { (try? VMConfig.validate(name: $0)) != nil }.sorted()
    }

    public static func load(_ name: String) throws(VMDefinitionError) -> VMDefinition {
        let path = path(of: name)
        guard let bytes = FileIO.readBytes(path) else { throw .notDefined(name, directory()) }
        guard let value = try? JSONParser.parse(bytes), case .object(let top) = value else {
            throw .invalid(path, "not a JSON object")
        }
        for key in top.members.map(\.key) where key != "name" && key != "options" {
            throw .invalid(path, "unknown key '\(key)' (a definition has 'name' and 'options')")
        }
        guard top["name"]?.stringValue == name else { throw .invalid(path, "'name' must be \"\(name)\", the file's name") }
        guard case .object(let options)? = top["options"] else { throw .invalid(path, "'options' must be an object") }
        return VMDefinition(name: name, options: options)
    }

    /// Writes the file (0600, its directory 0700); refuses to overwrite unless `replace`.
    public func save(replace: Bool) throws(VMDefinitionError) {
        let dir = Self.directory()
        let path = Self.path(of: name)
        if !replace && FileManager.default.fileExists(atPath: path) { throw .alreadyDefined(name, path) }
        do { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true,
                                                     attributes: [.posixPermissions: 0o700]) }
        catch { throw .invalid(dir, "cannot create the directory: \(error)") }
        let text = JSONWriter.encode(.object(["name": .string(name), "options": .object(options)])) + [0x0A]
        do { try FileIO.writeAtomically(path, text, mode: 0o600) } catch { throw .invalid(path, "cannot write: \(error)") }
    }

    public static func remove(_ name: String) throws(VMDefinitionError) {
        let path = path(of: name)
        guard FileManager.default.fileExists(atPath: path) else { throw .notDefined(name, directory()) }
        guard unlink(path) == 0 else { throw .invalid(path, "cannot remove: \(FileIO.errnoText())") }
    }
}

public enum VMDefinitionError: Error, CustomStringConvertible, Sendable {
    case notDefined(String, String)
    case alreadyDefined(String, String)
    case invalid(String, String)

    public var description: String {
        switch self {
        case .notDefined(let name, let dir): return "no VM '\(name)' is defined (in \(dir)); 'hostvmm define \(name) [up options]' defines it"
        case .alreadyDefined(let name, let path): return "VM '\(name)' is already defined (\(path)); use --replace to overwrite it"
        case .invalid(let path, let why): return "\(path): \(why)"
        }
    }
}
