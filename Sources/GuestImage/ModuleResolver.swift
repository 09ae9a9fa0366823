/// Works out which kernel module files to load, in which order, from the
/// kernel's `modules.dep` (made by depmod: Debian's package ships none) and
/// `modules.builtin`. Pure: tests feed it text.
public struct ModuleResolver {
    public enum ResolveError: Error, CustomStringConvertible, Equatable {
        case unknownModule(String)
        case dependencyCycle(String)

        public var description: String {
            switch self {
            case .unknownModule(let m): return "kernel module '\(m)' is neither built in nor in modules.dep"
            case .dependencyCycle(let m): return "dependency cycle through kernel module '\(m)'"
            }
        }
    }

    /// module name (dashes as underscores) -> relative path
    private var paths: [String: String] = [:]
    /// relative path -> its direct dependencies' paths, as listed
    private var deps: [String: [String]] = [:]
    private var builtin: Set<String> = []

    /// `kernel/drivers/virtio/virtio_balloon.ko.xz` -> `virtio_balloon`.
    public static func moduleName(ofPath path: String) -> String {
        var name = Substring(path.split(separator: "/").last ?? Substring(path))
        for suffix in [".xz", ".zst", ".gz", ".ko"] where name.hasSuffix(suffix) { name = name.dropLast(suffix.count) }
        return name.replacingOccurrences(of: "-", with: "_")
    }

    public init(modulesDep: String, modulesBuiltin: String) {
        for line in modulesDep.split(separator: "\n") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let path = String(line[..<colon])
            let rest = line[line.index(after: colon)...].split(separator: " ").map(String.init)
            paths[Self.moduleName(ofPath: path)] = path
            deps[path] = rest
        }
        for line in modulesBuiltin.split(separator: "\n") {
            builtin.insert(Self.moduleName(ofPath: String(line)))
        }
    }

    public func isBuiltin(_ name: String) -> Bool { builtin.contains(name.replacingOccurrences(of: "-", with: "_")) }

    /// Module files to load for `names`, dependencies first, each once.
    /// Built-in modules need no file and are skipped.
    public func loadOrder(for names: [String]) throws(ResolveError) -> [String] {
        var order: [String] = []
        var done = Set<String>()
        var visiting = Set<String>()

        func visit(_ path: String) throws(ResolveError) {
            if done.contains(path) { return }
            guard visiting.insert(path).inserted else { throw .dependencyCycle(Self.moduleName(ofPath: path)) }
            for dep in deps[path] ?? [] { try visit(dep) }
            visiting.remove(path)
            done.insert(path)
            order.append(path)
        }

        for raw in names {
            let name = raw.replacingOccurrences(of: "-", with: "_")
            if builtin.contains(name) { continue }
            guard let path = paths[name] else { throw .unknownModule(raw) }
            try visit(path)
        }
        return order
    }
}
