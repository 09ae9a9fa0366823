import Foundation

/// Builds the desktop guest (`hostvmm up --image desktop`): Debian bookworm
/// made by debootstrap (systemd, dbus, logind, a root autologin session on
/// tty1, the session-locker, guest-agent with its unit and udev rule) on a
/// raw ext4 disk made by `mkfs.ext4 -d` (nothing is mounted), booted by the
/// same Debian 6.12 kernel as the default image through a small busybox
/// initramfs that loads virtio_blk and ext4 and switch_roots.
///
/// Two caches under `cacheDir`:
/// - `desktop/base-SUITE-KEY.tar`: debootstrap's finished tree, keyed by
///   suite, mirror, variant and package list. debootstrap takes 35-90 s
///   (most of it unpacking and configuring, not downloading), so a rebuild
///   after an agent change starts from this tarball and takes seconds.
/// - `images/desktop-KEY/`: vmlinuz, initrd.cpio, disk.img, manifest.json,
///   keyed by the hashes of every input (agent, kernel .deb, busybox, base
///   tarball, every file written, module lists, layout version).
///
/// VMs never write `disk.img`: each boots a qcow2 overlay of it (DiskOverlay).
public struct DesktopImageBuilder {
    /// Bump when the image layout changes in a way the inputs' hashes miss.
    static let layoutVersion = "1"
    /// Sparse: ~200 MB of it is allocated; the rest is room for the guest.
    static let diskSize: UInt64 = 2 << 30

    public var cacheDir: String
    public var agentPath: String?
    public var sourceDir: String?
    public var log: (String) -> Void

    public init(cacheDir: String = ImageBuilder.defaultCacheDir(), agentPath: String? = nil, sourceDir: String? = nil,
                log: @escaping (String) -> Void)
    {
        self.cacheDir = cacheDir
        self.agentPath = agentPath
        self.sourceDir = sourceDir
        self.log = log
    }

    /// Returns the cached image for the current inputs, building it if needed.
    public func build(force: Bool = false) throws -> GuestImage {
        let started = Date()
        let steps = 8
        var step = 0
        func progress(_ s: String) {
            step += 1
            log(String(format: "desktop image [%d/%d] %@ (%.0f s)", step, steps, s, Date().timeIntervalSince(started)))
        }

        progress("checking host tools")
        for tool in HostTool.desktopImage { _ = try tool.locate() }
        guard getuid() == 0 else {
            throw ImageBuildError.invalid("the desktop image needs root: debootstrap chroots and creates device nodes, "
                                          + "and mkfs.ext4 -d copies the tree's owners")
        }
        let busybox = try HostTool.busybox.locate()
        if (try? runTool([try HostTool.ldd.locate(), busybox])) != nil { throw ImageBuildError.notStaticBusybox(busybox) }

        progress("guest-agent")
        let agent = try agentPath ?? AgentBuild(sourceDir: sourceDir, log: log).build(force: force)
        // The rootfs has Debian's glibc, so a glibc-dynamic agent would run;
        // one that needs the Swift runtime would not.
        _ = try AgentBuild.sharedLibraries(of: agent)

        progress("kernel package")
        let kernel = try KernelPackage.fetch(cacheDir: "\(cacheDir)/debs", log: log)

        progress("base tree (debootstrap \(DesktopRootfsFiles.suite))")
        let base = try baseTarball(force: force)

        let key = try cacheKey(agent: agent, busybox: busybox, kernel: kernel, baseHash: base.hash)
        let imageDir = "\(cacheDir)/images/desktop-\(key)"
        let image = GuestImage(kernel: "\(imageDir)/vmlinuz", initrd: "\(imageDir)/initrd.cpio", key: key,
                               disk: "\(imageDir)/disk.img")
        if !force && FileManager.default.fileExists(atPath: "\(imageDir)/manifest.json") {
            log("desktop image [\(steps)/\(steps)] cached image \(key) is current")
            return image
        }

        let staging = "\(cacheDir)/staging-desktop-\(getpid())"
        try? FileManager.default.removeItem(atPath: staging)
        defer { try? FileManager.default.removeItem(atPath: staging) }
        let rootfs = "\(staging)/rootfs"
        let out = "\(staging)/image"
        try makeDirectory(rootfs)
        try makeDirectory(out)

        progress("unpacking the base tree and \(kernel.packageName)")
        let tar = try HostTool.tar.locate()
        _ = try runTool([tar, "-C", rootfs, "--numeric-owner", "--xattrs", "--xattrs-include=*", "-xpf", base.path])
        let modulesDir = try kernel.unpack(into: "\(staging)/kernel")
        let resolver = ModuleResolver(
            modulesDep: try String(contentsOfFile: "\(modulesDir)/modules.dep", encoding: .utf8),
            modulesBuiltin: (try? String(contentsOfFile: "\(modulesDir)/modules.builtin", encoding: .utf8)) ?? "")

        progress("root filesystem: modules, files, guest-agent")
        let rootfsModules = try resolver.loadOrder(for: DesktopRootfsFiles.rootfsModules)
        try installModules(rootfsModules, from: modulesDir, into: rootfs, release: kernel.release)
        try customise(rootfs: rootfs, agent: agent)

        progress("initramfs")
        let initramfsModules = try resolver.loadOrder(for: DesktopRootfsFiles.initramfsModules)
        let initrd = try initramfs(busybox: busybox, modules: initramfsModules, modulesDir: modulesDir)
        try Data(initrd).write(to: URL(fileURLWithPath: "\(out)/initrd.cpio"))
        try FileManager.default.copyItem(atPath: "\(staging)/kernel/boot/vmlinuz-\(kernel.release)",
                                         toPath: "\(out)/vmlinuz")

        progress("disk: mkfs.ext4 -d (\(Self.diskSize >> 30) GiB sparse, nothing mounted)")
        let disk = "\(out)/disk.img"
        guard FileManager.default.createFile(atPath: disk, contents: nil), truncate(disk, off_t(Self.diskSize)) == 0
        else { throw ImageBuildError.commandFailed("cannot create \(disk): \(String(cString: strerror(errno)))") }
        _ = try runTool([try HostTool.mkfsExt4.locate(), "-q", "-F", "-L", "root", "-d", rootfs, disk])
        let allocated = Self.allocatedBytes(disk)

        let manifest: [String: Any] = [
            "key": key, "kernel-package": kernel.packageName, "agent": agent, "base-tarball": base.path,
            "initramfs-modules": initramfsModules, "rootfs-modules": rootfsModules,
            "initrd-bytes": initrd.count, "disk-bytes": Self.diskSize, "disk-allocated-bytes": allocated,
        ]
        let data = try JSONSerialization.data(withJSONObject: manifest, options: [.prettyPrinted, .sortedKeys])
        try data.write(to: URL(fileURLWithPath: "\(out)/manifest.json"))
        // Into place in one rename; a concurrent build of the same key that
        // finished first wins (rename onto its directory fails), and ours is
        // dropped with the staging directory: a VM may already boot from it.
        try makeDirectory("\(cacheDir)/images")
        if force { try? FileManager.default.removeItem(atPath: imageDir) }
        if rename(out, imageDir) != 0 && !FileManager.default.fileExists(atPath: "\(imageDir)/manifest.json") {
            throw ImageBuildError.commandFailed("cannot move \(out) to \(imageDir): \(String(cString: strerror(errno)))")
        }
        pruneOldImages(keeping: imageDir)
        log(String(format: "desktop image [%d/%d] built %@ in %.0f s: disk %d MiB allocated of %d MiB, initramfs %d KiB",
                   steps, steps, key, Date().timeIntervalSince(started), Int(allocated >> 20), Int(Self.diskSize >> 20),
                   initrd.count >> 10))
        return image
    }

    /// Desktop images are ~250 MiB each and every agent change makes one:
    /// keep the newest `keep` (the one just built among them). A running VM
    /// whose image goes keeps it open (QEMU holds its backing file's fd).
    private func pruneOldImages(keeping current: String, keep: Int = 2) {
        let dir = "\(cacheDir)/images"
        let fm = FileManager.default
        let olds = ((try? fm.contentsOfDirectory(atPath: dir)) ?? [])
            .filter { $0.hasPrefix("desktop-") && "\(dir)/\($0)" != current }
            .map { (path: "\(dir)/\($0)", date: ((try? fm.attributesOfItem(atPath: "\(dir)/\($0)"))?[.modificationDate] as? Date) ?? .distantPast) }
            .sorted { $0.date > $1.date }
        for old in olds.dropFirst(keep - 1) {
            log("removing the older desktop image \(old.path)")
            try? fm.removeItem(atPath: old.path)
        }
    }

    // MARK: - base tree

    /// debootstrap's tree as a tarball, made once per suite + package list.
    private func baseTarball(force: Bool) throws -> (path: String, hash: String) {
        let dir = "\(cacheDir)/desktop"
        try makeDirectory(dir)
        let sha = try HostTool.sha256sum.locate()
        let baseKey = try sha256(of: [DesktopRootfsFiles.suite, DesktopRootfsFiles.mirror, DesktopRootfsFiles.variant]
                                 + DesktopRootfsFiles.packages + DesktopRootfsFiles.baseTreeRemovals)
        let path = "\(dir)/base-\(DesktopRootfsFiles.suite)-\(baseKey.prefix(12)).tar"
        let hashFile = path + ".sha256"
        if !force, FileManager.default.fileExists(atPath: path) {
            if let h = try? String(contentsOfFile: hashFile, encoding: .utf8), h.count >= 64 {
                return (path, String(h.prefix(64)))
            }
            let h = String(try runTool([sha, path]).prefix(64))
            try? Data(h.utf8).write(to: URL(fileURLWithPath: hashFile))
            return (path, h)
        }

        let tree = "\(dir)/debootstrap-\(getpid())"
        try? FileManager.default.removeItem(atPath: tree)
        defer { try? FileManager.default.removeItem(atPath: tree) }
        let debs = "\(dir)/debs"
        try makeDirectory(debs)
        log("running debootstrap --variant=\(DesktopRootfsFiles.variant) \(DesktopRootfsFiles.suite) from "
            + "\(DesktopRootfsFiles.mirror) (~110 packages, 41 MB; 1-2 minutes)")
        var env = ProcessInfo.processInfo.environment
        env["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin"
        env["LC_ALL"] = "C"
        env["DEBIAN_FRONTEND"] = "noninteractive"
        do {
            _ = try runTool([try HostTool.debootstrap.locate(), "--variant=\(DesktopRootfsFiles.variant)",
                             "--include=\(DesktopRootfsFiles.packages.joined(separator: ","))", "--cache-dir=\(debs)",
                             DesktopRootfsFiles.suite, tree, DesktopRootfsFiles.mirror], environment: env)
        } catch {
            let debootstrapLog = (try? String(contentsOfFile: "\(tree)/debootstrap/debootstrap.log", encoding: .utf8))?
                .split(separator: "\n").suffix(10).joined(separator: "\n") ?? ""
            throw ImageBuildError.commandFailed("debootstrap failed (needs the network to reach "
                                                + "\(DesktopRootfsFiles.mirror)): \(error)\n\(debootstrapLog)")
        }
        for removal in DesktopRootfsFiles.baseTreeRemovals {
            let p = "\(tree)/\(removal)"
            for entry in (try? FileManager.default.contentsOfDirectory(atPath: p)) ?? [] where entry != "partial" {
                try FileManager.default.removeItem(atPath: "\(p)/\(entry)")
            }
        }
        let tmp = "\(path).tmp-\(getpid())"
        _ = try runTool([try HostTool.tar.locate(), "-C", tree, "--numeric-owner", "--xattrs", "--xattrs-include=*",
                         "-cpf", tmp, "."])
        let h = String(try runTool([sha, tmp]).prefix(64))
        try Data(h.utf8).write(to: URL(fileURLWithPath: hashFile))
        guard rename(tmp, path) == 0 else {
            throw ImageBuildError.commandFailed("cannot move \(tmp) to \(path): \(String(cString: strerror(errno)))")
        }
        return (path, h)
    }

    // MARK: - root filesystem

    /// Copies the module files (still .ko.xz: the guest's kmod reads them) and
    /// runs depmod for the guest.
    private func installModules(_ files: [String], from modulesDir: String, into rootfs: String, release: String) throws {
        let dest = "\(rootfs)/usr/lib/modules/\(release)"
        try? FileManager.default.removeItem(atPath: dest)
        for file in files + DesktopRootfsFiles.modulesMetadata {
            let target = "\(dest)/\(file)"
            try makeDirectory((target as NSString).deletingLastPathComponent)
            try FileManager.default.copyItem(atPath: "\(modulesDir)/\(file)", toPath: target)
        }
        _ = try runTool([try HostTool.depmod.locate(), "-b", rootfs, release])
    }

    private func customise(rootfs: String, agent: String) throws {
        let root = try RootfsWriter(root: rootfs)
        for file in DesktopRootfsFiles.files {
            try root.write(file.path, Data(file.content.utf8), mode: file.mode)
        }
        try root.write(DesktopRootfsFiles.agentPath, try Data(contentsOf: URL(fileURLWithPath: agent)), mode: 0o755)
        for link in DesktopRootfsFiles.symlinks { try root.symlink(link.path, to: link.target) }
        for path in DesktopRootfsFiles.removals { try root.remove(path) }
        let machineID = Data((DesktopRootfsFiles.randomMachineID() + "\n").utf8)
        try root.write("etc/machine-id", machineID, mode: 0o444)
        try root.write("var/lib/dbus/machine-id", machineID, mode: 0o644)
    }

    // MARK: - initramfs

    private func initramfs(busybox: String, modules: [String], modulesDir: String) throws -> [UInt8] {
        var archive = CPIOArchive()
        for dir in ["bin", "dev", "etc", "lib", "lib/modules", "newroot", "proc", "sys"] { archive.add(dir, .directory) }
        archive.add("dev/console", .characterDevice(major: 5, minor: 1), permissions: 0o600)
        archive.add("bin/busybox", .file(Array(try Data(contentsOf: URL(fileURLWithPath: busybox)))))
        for applet in DesktopRootfsFiles.initramfsApplets { archive.add("bin/\(applet)", .symlink(target: "busybox")) }
        archive.add("init", .file(Array(DesktopRootfsFiles.initramfsInit.utf8)))
        let xz = try HostTool.xz.locate()
        var loadList = ""
        for path in modules {
            let name = ModuleResolver.moduleName(ofPath: path) + ".ko"
            // Decompressed here: busybox insmod reads no .xz.
            let content = path.hasSuffix(".xz")
                ? Array(try runToolData([xz, "-dc", "\(modulesDir)/\(path)"]))
                : Array(try Data(contentsOf: URL(fileURLWithPath: "\(modulesDir)/\(path)")))
            archive.add("lib/modules/\(name)", .file(content), permissions: 0o644)
            loadList += name + "\n"
        }
        archive.add("etc/modules.load", .file(Array(loadList.utf8)), permissions: 0o644)
        archive.finish()
        return archive.bytes
    }

    // MARK: - helpers

    private func cacheKey(agent: String, busybox: String, kernel: KernelPackage, baseHash: String) throws -> String {
        let sums = try runTool([try HostTool.sha256sum.locate(), agent, busybox, kernel.debPath])
            .split(separator: "\n").map { $0.split(separator: " ").first.map(String.init) ?? "" }
        let material = [Self.layoutVersion, String(Self.diskSize), kernel.packageName, baseHash] + sums
            + DesktopRootfsFiles.keyMaterial
        return String(try sha256(of: material).prefix(16))
    }

    /// sha256 of the strings joined by NUL, through sha256sum.
    private func sha256(of parts: [String]) throws -> String {
        try makeDirectory(cacheDir)
        let tmp = "\(cacheDir)/key-desktop-\(getpid()).txt"
        try Data(parts.joined(separator: "\0").utf8).write(to: URL(fileURLWithPath: tmp))
        defer { try? FileManager.default.removeItem(atPath: tmp) }
        return String(try runTool([try HostTool.sha256sum.locate(), tmp]).prefix(64))
    }

    private func makeDirectory(_ path: String) throws {
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    static func allocatedBytes(_ path: String) -> UInt64 {
        var st = stat()
        guard stat(path, &st) == 0 else { return 0 }
        return UInt64(st.st_blocks) * 512
    }
}

/// Writes into a root filesystem tree on the host without following a
/// symlink out of it: debootstrap's tree has absolute symlinks (e.g. in /etc)
/// that would point at the host's own files.
struct RootfsWriter {
    let root: String

    init(root: String) throws {
        guard let real = realpath(root, nil) else { throw ImageBuildError.invalid("no root filesystem at \(root)") }
        self.root = String(cString: real)
        free(real)
    }

    /// The host path for `relative`, after checking that its parent directory
    /// (created if missing) resolves inside the root.
    private func checkedPath(_ relative: String) throws -> String {
        precondition(!relative.hasPrefix("/") && !relative.contains(".."), "rootfs paths are relative: \(relative)")
        let path = "\(root)/\(relative)"
        let parent = (path as NSString).deletingLastPathComponent
        try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true)
        guard let real = realpath(parent, nil) else { throw ImageBuildError.invalid("cannot resolve \(parent)") }
        defer { free(real) }
        let resolved = String(cString: real)
        guard resolved == root || resolved.hasPrefix(root + "/") else {
            throw ImageBuildError.invalid("\(relative) would be written outside the root filesystem (\(resolved))")
        }
        return path
    }

    func write(_ relative: String, _ data: Data, mode: UInt16) throws {
        let path = try checkedPath(relative)
        // Replace, never write through, whatever is there (a symlink included).
        _ = unlink(path)
        guard FileManager.default.createFile(atPath: path, contents: data), chmod(path, mode_t(mode)) == 0 else {
            throw ImageBuildError.commandFailed("cannot write \(path): \(String(cString: strerror(errno)))")
        }
    }

    func symlink(_ relative: String, to target: String) throws {
        let path = try checkedPath(relative)
        _ = unlink(path)
        guard Glibc.symlink(target, path) == 0 else {
            throw ImageBuildError.commandFailed("cannot link \(path): \(String(cString: strerror(errno)))")
        }
    }

    func remove(_ relative: String) throws {
        let path = try checkedPath(relative)
        if unlink(path) != 0 && errno != ENOENT {
            throw ImageBuildError.commandFailed("cannot remove \(path): \(String(cString: strerror(errno)))")
        }
    }
}
