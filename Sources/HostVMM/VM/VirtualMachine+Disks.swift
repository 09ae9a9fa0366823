import Foundation
import LinuxSystem

extension VirtualMachine {
    /// Before QEMU starts: each disk claimed for this VM (a disk another VM runs on is
    /// refused, naming it), --snapshot's overlays made, UEFI's variable store in place.
    func prepareDisks() throws {
        for disk in config.disks {
            do {
                diskClaims.append(try HostClaim.take(.disk, disk.path, what: "the disk \(disk.path)", for: config.name))
            } catch {
                releaseDisks()
                throw error
            }
        }
        for (i, disk) in config.disks.enumerated() {
            if config.snapshot {
                try DiskOverlay.create(base: disk.path, format: disk.format, at: state.diskSnapshot(i))
                onLog("disk \(i + 1): \(disk.path) (\(disk.format.rawValue)) behind a throwaway overlay (--snapshot)")
            } else {
                onLog("disk \(i + 1): \(disk.path) (\(disk.format.rawValue)); the guest writes to it")
            }
        }
        if let iso = config.cdrom { onLog("cdrom: \(iso)") }
        if config.kernelPath == nil {
            if config.firmware == .uefi, let vars = config.uefiVars {
                if !FileManager.default.fileExists(atPath: vars) {
                    guard let template = FileIO.readBytes(Firmware.ovmfVarsTemplate) else {
                        throw VMConfigError.outOfRange("--firmware uefi needs \(Firmware.ovmfVarsTemplate) (Debian package \(Firmware.ovmfPackage))")
                    }
                    try FileIO.writeAtomically(vars, template, mode: 0o600)
                }
                onLog("firmware: UEFI (OVMF), variables in \(vars)")
            } else {
                onLog("firmware: BIOS (SeaBIOS), booting the first disk")
            }
        }
    }

    func releaseDisks() {
        for claim in diskClaims { claim.release() }
        diskClaims = []
        if config.snapshot { for i in config.disks.indices { unlink(state.diskSnapshot(i)) } }
    }
}
