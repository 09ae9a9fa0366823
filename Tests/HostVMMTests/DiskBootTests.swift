import AgentProtocol
import Foundation
import TestSupport
import Testing

/// A person's own disk (issue #14): images laid out as distributions do
/// (Clients/make_boot_disk.py: MBR + syslinux, GPT + EFI system partition +
/// systemd-boot), booted by `hostvmm up --disk` with nothing else, through SeaBIOS
/// and through OVMF. What the guest writes is on the disk at the next boot;
/// --snapshot leaves the file as it was; a disk in use is refused naming its VM.
@Suite(.serialized, .timeLimit(.minutes(30))) struct DiskBootTests {
    static let builder = "\(TestEnvironment.packageRoot)/Tests/HostVMMTests/Clients/make_boot_disk.py"

    /// A disk of `kind` (bios, uefi; iso: a CD) booting the embedded image's kernel and initramfs with
    /// an empty ext4 data partition; or, with `distribution`, the desktop image's Debian
    /// root file system as partition 2 (a Debian install with systemd, booted by firmware).
    static func makeDisk(_ kind: String, in dir: String, distribution: Bool = false) throws -> String {
        let image = try runCommand(TestEnvironment.hostvmm, ["image", "build"] + (distribution ? ["--image", "desktop"] : []),
                                   timeout: 600)
        let paths = Dictionary(image.output.split(separator: "\n").compactMap { line -> (String, String)? in
            let parts = line.split(separator: " ", maxSplits: 1).map(String.init)
            return parts.count == 2 && ["kernel:", "initrd:", "disk:"].contains(parts[0]) ? (String(parts[0].dropLast()), parts[1]) : nil
        }, uniquingKeysWith: { $1 })
        guard let kernel = paths["kernel"], let initrd = paths["initrd"] else { throw TestFailure("image build: \(image.output)") }
        var arguments = [builder, kind, "\(dir)/\(kind).\(kind == "iso" ? "iso" : "img")", kernel, initrd]
        if distribution {
            guard let root = paths["disk"] else { throw TestFailure("image build --image desktop: no disk in \(image.output)") }
            arguments.append(root)
        }
        let made = try runCommand("/usr/bin/python3", arguments, timeout: 300)
        guard made.status == 0 else { throw TestFailure("make_boot_disk \(kind): \(made.output)") }
        return arguments[2]
    }

    static func sha256(_ path: String) throws -> String {
        String(try runCommand("/usr/bin/sha256sum", [path]).output.prefix(64))
    }

    /// Mounts the disk's ext4 partition in the guest and runs `command` there.
    func onDataPartition(_ vm: BootedVM, _ command: String) throws -> String {
        let r = try vm.guestRun("mkdir -p /mnt && mount -t ext4 /dev/vda2 /mnt && cd /mnt && \(command); cd /; umount /mnt")
        return r.output
    }

    @Test(arguments: ["bios", "uefi"])
    func aDistributionStyleDiskBootsAndKeepsWhatTheGuestWrites(kind: String) throws {
        let dir = try TestEnvironment.temporaryDirectory("disk-\(kind)")
        let disk = try Self.makeDisk(kind, in: dir)
        let options = ["--disk", disk, "--firmware", kind, "--no-display", "--audio", "none"]

        // First boot: the firmware, the boot loader, our kernel; the guest writes a file.
        do {
            let vm = try BootedVM(name: "disk-\(kind)", options: options)
            #expect(vm.up.count(containing: kind == "uefi" ? "firmware: UEFI" : "firmware: BIOS") == 1, "\(vm.up.transcript)")
            let wrote = try onDataPartition(vm, "echo written-on-first-boot > note.txt && sync && cat note.txt")
            #expect(wrote.contains("written-on-first-boot"), "guest: \(wrote)")

            // The same disk for a second VM: refused before QEMU starts, naming the first.
            let second = try runCommand(TestEnvironment.hostvmm, ["up", "--name", "intruder", "--disk", disk],
                                        environment: vm.environment, timeout: 60)
            #expect(second.status != 0 && second.output.contains("in use by VM 'disk-\(kind)'"), "\(second.output)")

            let down = try vm.cli(["shutdown", vm.name])
            #expect(down.status == 0, "shutdown: \(down.output)")
            #expect(vm.upExitCode() == 0)
        }
        // Second boot: the file is there.
        let sha: String
        do {
            let vm = try BootedVM(name: "disk-\(kind)", options: options)
            let read = try onDataPartition(vm, "cat note.txt")
            #expect(read.contains("written-on-first-boot"), "second boot: \(read)")
            #expect(try vm.cli(["shutdown", vm.name]).status == 0)
            #expect(vm.upExitCode() == 0)
            sha = try Self.sha256(disk)
        }
        // --snapshot: the guest writes, the file does not change.
        do {
            let vm = try BootedVM(name: "disk-\(kind)", options: options + ["--snapshot"])
            let wrote = try onDataPartition(vm, "echo throwaway > gone.txt && sync && ls")
            #expect(wrote.contains("gone.txt"), "guest: \(wrote)")
            #expect(try vm.cli(["shutdown", vm.name]).status == 0)
            #expect(vm.upExitCode() == 0)
        }
        #expect(try Self.sha256(disk) == sha, "--snapshot changed the disk")
    }

    /// An installer's first boot: `up --cdrom ISO` with no disk boots the CD through SeaBIOS
    /// (ISO 9660, isolinux as the El Torito image, as Debian's installer CDs are laid out).
    @Test func anInstallerCDBootsWhenThereIsNoDisk() throws {
        let dir = try TestEnvironment.temporaryDirectory("cdrom")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let iso = try Self.makeDisk("iso", in: dir)
        let vm = try BootedVM(name: "cdrom", options: ["--cdrom", iso, "--no-display", "--audio", "none"])
        #expect(vm.up.count(containing: "firmware: BIOS") == 1 && vm.up.count(containing: "cdrom: \(iso)") == 1, "\(vm.up.transcript)")
        let cmdline = try vm.guestRun("cat /proc/cmdline").output
        #expect(cmdline.contains("BOOT_IMAGE=/isolinux/vmlinuz"), "not booted by isolinux from the CD: \(cmdline)")
        #expect(try vm.cli(["shutdown", vm.name]).status == 0)
        #expect(vm.upExitCode() == 0)
    }
}
