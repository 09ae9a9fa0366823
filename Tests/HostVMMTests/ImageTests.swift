import Foundation
import Testing
@testable import GuestImage
@testable import HostVMM

@Suite struct ModuleResolverTests {
    let resolver = ModuleResolver(
        modulesDep: """
            kernel/drivers/misc/pvpanic/pvpanic-pci.ko.xz: kernel/drivers/misc/pvpanic/pvpanic.ko.xz
            kernel/drivers/misc/pvpanic/pvpanic.ko.xz:
            kernel/drivers/gpu/virtio-gpu.ko.xz: kernel/drivers/gpu/drm_kms.ko.xz kernel/drivers/gpu/drm.ko.xz
            kernel/drivers/gpu/drm_kms.ko.xz: kernel/drivers/gpu/drm.ko.xz
            kernel/drivers/gpu/drm.ko.xz:
            kernel/a.ko.xz: kernel/b.ko.xz
            kernel/b.ko.xz: kernel/a.ko.xz
            """,
        modulesBuiltin: "kernel/drivers/virtio/virtio_pci.ko\n")

    @Test func dependenciesComeFirstAndOnlyOnce() throws {
        let order = try resolver.loadOrder(for: ["virtio_gpu", "pvpanic-pci", "drm"])
        #expect(order == [
            "kernel/drivers/gpu/drm.ko.xz", "kernel/drivers/gpu/drm_kms.ko.xz", "kernel/drivers/gpu/virtio-gpu.ko.xz",
            "kernel/drivers/misc/pvpanic/pvpanic.ko.xz", "kernel/drivers/misc/pvpanic/pvpanic-pci.ko.xz",
        ])
    }

    @Test func builtinModulesNeedNoFile() throws {
        #expect(try resolver.loadOrder(for: ["virtio_pci"]) == [])
    }

    @Test func unknownModuleAndCyclesAreErrors() {
        #expect(throws: ModuleResolver.ResolveError.unknownModule("nope")) { try resolver.loadOrder(for: ["nope"]) }
        #expect(throws: ModuleResolver.ResolveError.self) { try resolver.loadOrder(for: ["a"]) }
    }

    @Test func namesNormaliseDashesAndSuffixes() {
        #expect(ModuleResolver.moduleName(ofPath: "kernel/x/pvpanic-pci.ko.xz") == "pvpanic_pci")
        #expect(ModuleResolver.moduleName(ofPath: "evdev.ko") == "evdev")
    }
}

/// The archive is read back by the real cpio(1), the peer that matters besides the kernel.
@Suite struct CPIOArchiveTests {
    @Test func cpioListsWhatWeWrote() throws {
        var archive = CPIOArchive()
        archive.add("bin", .directory)
        archive.add("bin/hello", .file(Array("hello\n".utf8)))
        archive.add("init", .symlink(target: "bin/hello"))
        archive.add("dev", .directory)
        archive.add("dev/console", .characterDevice(major: 5, minor: 1), permissions: 0o600)
        archive.finish()
        #expect(archive.bytes.count % 4 == 0)
        let dir = try TestEnvironment.temporaryDirectory("cpio")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let file = "\(dir)/a.cpio"
        try Data(archive.bytes).write(to: URL(fileURLWithPath: file))
        let listing = try runCommand("/bin/sh", ["-c", "cpio -itv < \(file)"])
        #expect(listing.status == 0, "\(listing.output)")
        let lines = listing.output.split(separator: "\n")
        #expect(lines.contains { $0.hasPrefix("crw-------") && $0.contains("dev/console") })
        #expect(lines.contains { $0.hasPrefix("lrwxr-xr-x") && $0.contains("init -> bin/hello") })
        #expect(lines.contains { $0.hasPrefix("-rwxr-xr-x") && $0.contains("bin/hello") })
        let extracted = try runCommand("/bin/sh", ["-c", "cd \(dir) && cpio -id --quiet bin/hello < a.cpio && cat bin/hello"])
        #expect(extracted.output == "hello")
    }
}
