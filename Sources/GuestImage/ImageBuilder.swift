import Foundation

/// A built guest image: kernel + initramfs, in the cache, and for the desktop
/// image a raw root disk (which VMs never write: each boots an overlay of it).
public struct GuestImage: Sendable {
    public var kernel: String
    public var initrd: String
    public var key: String
    public var disk: String? = nil
}

/// Builds the embedded default guest (issue 2 §2; architecture.md §5):
/// Debian's 6.12 kernel and the modules our devices need, busybox-static, and
/// guest-agent with the Swift runtime linked in, packed as a newc initramfs.
/// Cached under a key made of the hashes of every input, so a changed agent,
/// kernel package or init script makes a new image and nothing else does.
public struct ImageBuilder {
    /// Bump when the image layout changes in a way the inputs' hashes miss.
    static let layoutVersion = "1"

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

    public static func defaultCacheDir(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        if let d = environment["HOSTVMM_CACHE_DIR"], !d.isEmpty { return d }
        if let x = environment["XDG_CACHE_HOME"], !x.isEmpty { return "\(x)/hostvmm" }
        return "\(environment["HOME"] ?? "/root")/.cache/hostvmm"
    }

    /// Returns the cached image for the current inputs, building it if needed.
    public func build(force: Bool = false) throws -> GuestImage {
        let steps = 6
        var step = 0
        func progress(_ s: String) {
            step += 1
            log("image [\(step)/\(steps)] \(s)")
        }

        progress("checking host tools")
        for tool in HostTool.defaultImage { _ = try tool.locate() }
        let busybox = try HostTool.busybox.locate()
        // ldd fails on a static binary; a dynamic busybox would not run in the guest.
        if (try? runTool([try HostTool.ldd.locate(), busybox])) != nil { throw ImageBuildError.notStaticBusybox(busybox) }

        progress("guest-agent")
        let agent = try agentPath ?? AgentBuild(sourceDir: sourceDir, log: log).build(force: force)
        let agentLibraries = try AgentBuild.sharedLibraries(of: agent)
        // aplay/arecord for the sound device, with the loader and libraries they link.
        let aplay = try HostTool.aplay.locate()
        let aplayLibraries = try AgentBuild.sharedLibraries(of: aplay)
        let libraries = Array(Set(agentLibraries + aplayLibraries)).sorted()

        progress("kernel package")
        let kernel = try KernelPackage.fetch(cacheDir: "\(cacheDir)/debs", log: log)

        let inputs = [agent, busybox, kernel.debPath, aplay, GuestInitFiles.alsaConfig] + libraries
        let key = try cacheKey(files: inputs, kernel: kernel)
        let imageDir = "\(cacheDir)/images/\(key)"
        let image = GuestImage(kernel: "\(imageDir)/vmlinuz", initrd: "\(imageDir)/initrd.cpio", key: key)
        if !force && FileManager.default.fileExists(atPath: "\(imageDir)/manifest.json") {
            log("image [\(steps)/\(steps)] cached image \(key) is current")
            return image
        }

        progress("unpacking \(kernel.packageName) and running depmod")
        let staging = "\(cacheDir)/staging-\(getpid())"
        try? FileManager.default.removeItem(atPath: staging)
        defer { try? FileManager.default.removeItem(atPath: staging) }
        let modulesDir = try kernel.unpack(into: staging)
        let resolver = ModuleResolver(
            modulesDep: try String(contentsOfFile: "\(modulesDir)/modules.dep", encoding: .utf8),
            modulesBuiltin: (try? String(contentsOfFile: "\(modulesDir)/modules.builtin", encoding: .utf8)) ?? "")
        let baseOrder = try resolver.loadOrder(for: GuestInitFiles.modules)
        // The display's modules (drm and its helpers, ~1.5 MB) load only when the VM has a
        // virtio-gpu (rcS checks the PCI ids): a 512 MiB guest without one keeps that memory.
        let displayOrder = try resolver.loadOrder(for: GuestInitFiles.displayModules).filter { !baseOrder.contains($0) }
        let soundOrder = try resolver.loadOrder(for: GuestInitFiles.soundModules).filter { !baseOrder.contains($0) }
        let usbOrder = try resolver.loadOrder(for: GuestInitFiles.usbModules).filter { !baseOrder.contains($0) }
        let diskOrder = try resolver.loadOrder(for: GuestInitFiles.diskModules).filter { !baseOrder.contains($0) }
        var order = baseOrder
        for path in displayOrder + soundOrder + usbOrder + diskOrder where !order.contains(path) { order.append(path) }

        progress("packing initramfs (\(order.count) modules, busybox, guest-agent, aplay and \(libraries.count) libraries)")
        var archive = CPIOArchive()
        for dir in ["bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "etc/init.d", "etc/acpi", "etc/acpi/PWRF",
                    "proc", "sys", "dev", "run", "tmp", "var", "lib", "lib/modules", "root", "usr/share", "usr/share/alsa"]
        {
            archive.add(dir, .directory)
        }
        archive.add("dev/console", .characterDevice(major: 5, minor: 1), permissions: 0o600)
        archive.add("dev/null", .characterDevice(major: 1, minor: 3), permissions: 0o666)
        archive.add("bin/busybox", .file(try readBytes(busybox)))
        archive.add("bin/sh", .symlink(target: "busybox"))
        archive.add("init", .symlink(target: "bin/busybox"))
        archive.add("sbin/guest-agent", .file(try readBytes(agent)))
        archive.add("usr/bin/aplay", .file(try readBytes(aplay)))
        archive.add("usr/bin/arecord", .symlink(target: "aplay"))
        archive.add(String(GuestInitFiles.alsaConfig.dropFirst()), .file(try readBytes(GuestInitFiles.alsaConfig)), permissions: 0o644)
        archive.add("etc/asound.conf", .file(Array(GuestInitFiles.asoundConf.utf8)), permissions: 0o644)
        archive.add("etc/inittab", .file(Array(GuestInitFiles.inittab.utf8)), permissions: 0o644)
        archive.add("etc/init.d/rcS", .file(Array(GuestInitFiles.rcS.utf8)))
        archive.add("etc/init.d/rcK", .file(Array(GuestInitFiles.rcK.utf8)))
        archive.add("etc/udhcpc.script", .file(Array(GuestInitFiles.udhcpcScript.utf8)))
        archive.add("etc/acpi/PWRF/00000080", .file(Array(GuestInitFiles.powerButton.utf8)))
        archive.add("etc/os-release", .file(Array(GuestInitFiles.osRelease.utf8)), permissions: 0o644)
        archive.add("etc/passwd", .file(Array(GuestInitFiles.passwd.utf8)), permissions: 0o644)
        archive.add("etc/group", .file(Array(GuestInitFiles.group.utf8)), permissions: 0o644)
        archive.add("etc/shadow", .file(Array(GuestInitFiles.shadow.utf8)), permissions: 0o600)
        // What stock agents (qemu-ga) run, as a distribution has them (issue #15).
        archive.add("sbin/shutdown", .file(Array(GuestInitFiles.shutdown.utf8)))
        archive.add("usr/sbin/chpasswd", .file(Array(GuestInitFiles.chpasswd.utf8)))
        var loadList = ""
        var displayList = ""
        var soundList = ""
        var usbList = ""
        var diskList = ""
        let xz = try HostTool.xz.locate()
        for path in order {
            let name = ModuleResolver.moduleName(ofPath: path) + ".ko"
            // Decompressed here so busybox insmod needs no xz support.
            let content: [UInt8]
            if path.hasSuffix(".xz") {
                content = Array(try runToolData([xz, "-dc", "\(modulesDir)/\(path)"]))
            } else {
                content = try readBytes("\(modulesDir)/\(path)")
            }
            archive.add("lib/modules/\(name)", .file(content), permissions: 0o644)
            if baseOrder.contains(path) { loadList += name + "\n" }
            if displayOrder.contains(path) { displayList += name + "\n" }
            if soundOrder.contains(path) { soundList += name + "\n" }
            if usbOrder.contains(path) { usbList += name + "\n" }
            if diskOrder.contains(path) { diskList += name + "\n" }
        }
        archive.add("etc/modules.load", .file(Array(loadList.utf8)), permissions: 0o644)
        archive.add("etc/modules-display.load", .file(Array(displayList.utf8)), permissions: 0o644)
        archive.add("etc/modules-sound.load", .file(Array(soundList.utf8)), permissions: 0o644)
        archive.add("etc/modules-usb.load", .file(Array(usbList.utf8)), permissions: 0o644)
        archive.add("etc/modules-disk.load", .file(Array(diskList.utf8)), permissions: 0o644)
        var madeDirs = Set(["lib"])
        for lib in libraries {
            let rel = String(lib.dropFirst())
            var parent = ""
            for component in rel.split(separator: "/").dropLast() {
                parent += parent.isEmpty ? String(component) : "/\(component)"
                if madeDirs.insert(parent).inserted { archive.add(parent, .directory) }
            }
            archive.add(rel, .file(try readBytes(lib)))
        }
        archive.finish()

        try FileManager.default.createDirectory(atPath: imageDir, withIntermediateDirectories: true)
        try Data(archive.bytes).write(to: URL(fileURLWithPath: image.initrd))
        try FileManager.default.copyItem(atPath: "\(staging)/boot/vmlinuz-\(kernel.release)", toPath: image.kernel)
        let manifest: [String: Any] = [
            "key": key, "kernel-package": kernel.packageName, "modules": order,
            "agent": agent, "initrd-bytes": archive.bytes.count,
        ]
        let data = try JSONSerialization.data(withJSONObject: manifest, options: [.prettyPrinted, .sortedKeys])
        try data.write(to: URL(fileURLWithPath: "\(imageDir)/manifest.json"))
        log("image [\(steps)/\(steps)] built \(key): \(archive.bytes.count >> 20) MiB initramfs")
        return image
    }

    /// Reads a whole file. A ~20 MB agent binary is the largest input.
    private func readBytes(_ path: String) throws -> [UInt8] {
        Array(try Data(contentsOf: URL(fileURLWithPath: path)))
    }

    private func cacheKey(files: [String], kernel: KernelPackage) throws -> String {
        let sha = try HostTool.sha256sum.locate()
        let sums = try DigestCache(path: "\(cacheDir)/input-digests.txt").sums(files)
        let description = ([Self.layoutVersion, kernel.packageName] + sums + GuestInitFiles.modules + ["display:"]
            + GuestInitFiles.displayModules + ["sound:"] + GuestInitFiles.soundModules + ["usb:"] + GuestInitFiles.usbModules + ["disk:"] + GuestInitFiles.diskModules
            + [GuestInitFiles.asoundConf, GuestInitFiles.inittab, GuestInitFiles.rcS, GuestInitFiles.rcK, GuestInitFiles.powerButton,
               GuestInitFiles.udhcpcScript, GuestInitFiles.osRelease, GuestInitFiles.passwd, GuestInitFiles.group,
               GuestInitFiles.shadow, GuestInitFiles.shutdown, GuestInitFiles.chpasswd])
            .joined(separator: "\n")
        let tmp = "\(cacheDir)/key-\(getpid()).txt"
        try Data(description.utf8).write(to: URL(fileURLWithPath: tmp))
        defer { try? FileManager.default.removeItem(atPath: tmp) }
        return String(try runTool([sha, tmp]).prefix(16))
    }
}
