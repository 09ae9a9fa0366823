import Foundation

/// The guest kernel: Debian's bookworm-backports 6.12 package, downloaded with
/// apt-get and unpacked with dpkg-deb (field-notes.md, "The guest kernel").
struct KernelPackage {
    /// Debian names its plain amd64 kernels linux-image-6.12.N+deb12-amd64-unsigned.
    static let namePattern = #"^linux-image-6\.12\.[0-9]+\+deb12-amd64-unsigned$"#

    var debPath: String
    var packageName: String

    /// The newest matching package in the apt lists, downloaded into `cacheDir`
    /// once. Without apt lists (offline), the newest .deb already cached is used.
    static func fetch(cacheDir: String, log: (String) -> Void) throws(ImageBuildError) -> KernelPackage {
        try? FileManager.default.createDirectory(atPath: cacheDir, withIntermediateDirectories: true)
        // apt-cache search costs half a second of every `up`: its answer is kept until apt's
        // lists change (apt-get update renames files into the directory, so its mtime moves).
        let stamp = "\(cacheDir)/newest-kernel.txt"
        let lists = DigestCache.identity("/var/lib/apt/lists") ?? "none"
        if let remembered = try? String(contentsOfFile: stamp, encoding: .utf8),
           case let lines = remembered.split(separator: "\n").map(String.init), lines.count == 2, lines[0] == lists,
           let cached = cachedDebs(in: cacheDir).first(where: { $0.packageName == lines[1] })
        {
            return cached
        }
        let aptCache = try HostTool.aptCache.locate()
        let listing = (try? runTool([aptCache, "search", "--names-only", namePattern])) ?? ""
        let names = listing.split(separator: "\n").compactMap { $0.split(separator: " ").first.map(String.init) }
        guard let newest = names.max(by: { versionKey($0) < versionKey($1) }) else {
            if let cached = cachedDebs(in: cacheDir).last {
                log("apt lists have no 6.12 kernel; using the cached \(cached.packageName)")
                return cached
            }
            throw .noKernelPackage("apt-cache search found none")
        }
        try? "\(lists)\n\(newest)".write(toFile: stamp, atomically: true, encoding: .utf8)
        if let cached = cachedDebs(in: cacheDir).first(where: { $0.packageName == newest }) {
            return cached
        }
        log("downloading \(newest)")
        let aptGet = try HostTool.aptGet.locate()
        _ = try runTool([aptGet, "download", "-q", newest], in: cacheDir)
        guard let downloaded = cachedDebs(in: cacheDir).first(where: { $0.packageName == newest }) else {
            throw .noKernelPackage("apt-get download \(newest) left no .deb in \(cacheDir)")
        }
        return downloaded
    }

    /// Sort key: the numeric patch level (6.12.N).
    private static func versionKey(_ name: String) -> Int {
        let afterPrefix = name.dropFirst("linux-image-6.12.".count)
        return Int(afterPrefix.prefix { $0.isNumber }) ?? 0
    }

    private static func cachedDebs(in dir: String) -> [KernelPackage] {
        let files = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        return files.filter { $0.hasSuffix(".deb") && $0.hasPrefix("linux-image-6.12.") }
            .map { KernelPackage(debPath: "\(dir)/\($0)", packageName: String($0.prefix { $0 != "_" })) }
            .filter { $0.packageName.range(of: namePattern, options: .regularExpression) != nil }
            .sorted { versionKey($0.packageName) < versionKey($1.packageName) }
    }

    /// The kernel release string (`6.12.N+deb12-amd64`) the package installs under.
    var release: String {
        String(packageName.dropFirst("linux-image-".count).dropLast("-unsigned".count))
    }

    /// Unpacks into `dir` and runs depmod there. Returns the modules directory.
    func unpack(into dir: String) throws(ImageBuildError) -> String {
        let dpkgDeb = try HostTool.dpkgDeb.locate()
        let depmod = try HostTool.depmod.locate()
        _ = try runTool([dpkgDeb, "-x", debPath, dir])
        _ = try runTool([depmod, "-b", dir, release])
        let modulesDir = "\(dir)/lib/modules/\(release)"
        guard FileManager.default.fileExists(atPath: "\(modulesDir)/modules.dep") else {
            throw .commandFailed("depmod produced no modules.dep in \(modulesDir)")
        }
        return modulesDir
    }
}
