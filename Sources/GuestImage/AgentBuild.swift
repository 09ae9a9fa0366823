import Foundation
import Glibc

/// Builds guest-agent for the guest: release, a fully static executable (Swift
/// runtime and glibc linked in: it runs on any Linux guest, needs no libraries
/// in the image, and its resident memory is a third lower than with shared
/// glibc and libstdc++), in its own scratch directory (.build-guest) so that
/// the host build's flags never replace it with a dynamically linked binary.
public struct AgentBuild {
    var sourceDir: String?
    var log: (String) -> Void

    public init(sourceDir: String? = nil, log: @escaping (String) -> Void) {
        self.sourceDir = sourceDir
        self.log = log
    }

    /// The package root: explicit, $HOSTVMM_SOURCE_DIR, or found upwards from
    /// this executable (.build/<triple>/<config>/hostvmm) or the working directory.
    func packageRoot() throws(ImageBuildError) -> String {
        let env = ProcessInfo.processInfo.environment
        var candidates: [String] = []
        if let sourceDir { candidates.append(sourceDir) }
        if let s = env["HOSTVMM_SOURCE_DIR"] { candidates.append(s) }
        var dir = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
        for _ in 0..<6 {
            candidates.append(dir.path)
            dir.deleteLastPathComponent()
        }
        candidates.append(FileManager.default.currentDirectoryPath)
        for c in candidates where FileManager.default.fileExists(atPath: "\(c)/Sources/GuestAgent") {
            return c
        }
        throw .noSourceTree
    }

    /// `force`: run swift build even when the binary looks current (`image build --force`).
    public func build(force: Bool = false) throws(ImageBuildError) -> String {
        // An installed hostvmm (scripts/package.sh) carries the agent it was built with and
        // needs no Swift toolchain; a source tree named explicitly still wins.
        let env = ProcessInfo.processInfo.environment
        if sourceDir == nil, env["HOSTVMM_SOURCE_DIR"] == nil, let bundled = Self.bundledAgent(environment: env) {
            guard FileManager.default.isExecutableFile(atPath: bundled) else {
                throw .commandFailed("HOSTVMM_GUEST_AGENT=\(bundled) is not an executable file")
            }
            log("guest-agent: the packaged \(bundled)")
            return bundled
        }
        let root = try packageRoot()
        let swift = ProcessInfo.processInfo.environment["SWIFT_EXEC_PATH"] ?? "/opt/swift/usr/bin/swift"
        let swiftPath = FileManager.default.isExecutableFile(atPath: swift) ? swift : "/usr/bin/swift"
        // --strip-debug: the guest needs no DWARF; symbols stay for backtraces.
        var args = [swiftPath, "build", "-c", "release", "--static-swift-stdlib", "-Xswiftc", "-static-executable",
                    "-Xlinker", "--strip-debug", "--product", "guest-agent", "--scratch-path", "\(root)/.build-guest"]
        // Footprint (issue #17, docs/benchmarks.md): the agent uses no Regex, so _StringProcessing
        // and _RegexParser (1.1 MB) stay out; one section per function lets the linker (gold,
        // Swift's default on Linux) put the functions the agent runs side by side, listed in
        // scripts/guest-agent.order (scripts/guest-agent-order.py makes it): the kernel maps
        // code 64 KiB around each fault, so scattered hot code is what makes resident memory.
        args += ["-Xswiftc", "-Xfrontend", "-Xswiftc", "-disable-implicit-string-processing-module-import",
                 "-Xswiftc", "-Xfrontend", "-Xswiftc", "-function-sections"]
        let order = "\(root)/scripts/guest-agent.order"
        if FileManager.default.fileExists(atPath: order) {
            args += ["-Xlinker", "--section-ordering-file=\(order)"]
        } else {
            log("building guest-agent: no \(order), so its hot functions are not placed together (more resident memory)")
        }
        // Every `up` comes through here: a SwiftPM run that finds nothing to do still costs
        // about 2.5 s (issue #17), so a binary newer than every input, built with these
        // arguments, is used as it is.
        let path = "\(root)/.build-guest/release/guest-agent"
        let stamp = "\(root)/.build-guest/guest-agent.arguments"
        let recipe = args.joined(separator: "\n")
        if !force, let built = Self.modificationTime(path), (try? String(contentsOfFile: stamp, encoding: .utf8)) == recipe,
           Self.newestInput(root: root) < built
        {
            return path
        }
        log("building guest-agent: swift build -c release --static-swift-stdlib -Xswiftc -static-executable (scratch .build-guest)")
        _ = try runTool(args, in: root)
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw .commandFailed("swift build reported success but \(path) is missing")
        }
        try? recipe.write(toFile: stamp, atomically: true, encoding: .utf8)
        return path
    }

    /// $HOSTVMM_GUEST_AGENT, else `../lib/hostvmm/guest-agent` beside this executable
    /// (/usr/bin/hostvmm -> /usr/lib/hostvmm/guest-agent), if it is there.
    static func bundledAgent(environment: [String: String]) -> String? {
        if let path = environment["HOSTVMM_GUEST_AGENT"], !path.isEmpty { return path }
        guard let exe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") else { return nil }
        let prefix = URL(fileURLWithPath: exe).deletingLastPathComponent().deletingLastPathComponent()
        let candidate = prefix.appendingPathComponent("lib/hostvmm/guest-agent").path
        return FileManager.default.isExecutableFile(atPath: candidate) ? candidate : nil
    }

    /// What the agent is built from: the manifest, the link order and its targets' sources.
    static let inputs = ["Package.swift", "scripts/guest-agent.order", "Sources/GuestAgent", "Sources/AgentProtocol",
                         "Sources/LinuxSystem", "Sources/CLinuxSupport", "Sources/CX11", "Sources/CCrypt"]

    static func modificationTime(_ path: String) -> Double? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        return Double(st.st_mtim.tv_sec) + Double(st.st_mtim.tv_nsec) / 1e9
    }

    /// The newest modification time among the inputs (directories walked); a missing
    /// input counts as new, so the build runs and says what is wrong.
    static func newestInput(root: String) -> Double {
        var newest = 0.0
        for input in inputs {
            let top = "\(root)/\(input)"
            guard let t = modificationTime(top) else { return .infinity }
            newest = max(newest, t)
            guard let walker = FileManager.default.enumerator(atPath: top) else { continue }
            for case let relative as String in walker {
                newest = max(newest, modificationTime("\(top)/\(relative)") ?? .infinity)
            }
        }
        return newest
    }

    /// The shared libraries an agent binary needs at run time, with the
    /// dynamic loader: none for our static build; glibc's for one given with
    /// --agent. Refuses a binary that needs the Swift runtime.
    static func sharedLibraries(of binary: String) throws(ImageBuildError) -> [String] {
        let ldd = try HostTool.ldd.locate()
        // ldd fails on a static executable: nothing to copy.
        guard let output = try? runTool([ldd, binary]) else { return [] }
        var libs: [String] = []
        var swiftLibs: [String] = []
        for line in output.split(separator: "\n") {
            let parts = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
            let path: String?
            if let arrow = parts.firstIndex(of: "=>"), arrow + 1 < parts.count, parts[arrow + 1].hasPrefix("/") {
                path = parts[arrow + 1]
            } else if let first = parts.first, first.hasPrefix("/") {
                path = first
            } else {
                path = nil
            }
            guard let path else { continue }
            if path.contains("libswift") || path.contains("libFoundation") || path.contains("libdispatch") {
                swiftLibs.append(path)
            }
            libs.append(path)
        }
        if !swiftLibs.isEmpty { throw .agentNotStatic(binary, swiftLibs) }
        return libs
    }
}
