import CLinuxSupport
import Glibc
import LinuxSystem
import pvpanic

/// The guest's RAM, owned by hostvmm (issue #17, docs/design.md "Guest memory"):
/// a memfd hostvmm creates and sizes, handed to QEMU as an inherited descriptor
/// (`memory-backend-file` on /proc/self/fd/N, shared, so vhost-user devices map
/// the same pages). Because hostvmm holds the file, it reads guest memory whenever
/// it needs to: a vmcore straight from RAM while QEMU holds the guest paused.
final class GuestRAM: Sendable {
    let fd: Int32
    /// Where each part of the file sits in guest-physical space (QEMU's q35 layout).
    let ranges: [GuestMemoryRange]

    /// The descriptor number QEMU gets it as (the first one after stdio).
    static let childFD: Int32 = 3

    init(bytes: UInt64, vmName: String) throws(SystemError) {
        let fd = clinux_memfd_create("hostvmm-ram-\(vmName)", 1)  // MFD_CLOEXEC
        guard fd >= 0 else { throw SystemError("memfd_create", "guest RAM") }
        guard ftruncate(fd, off_t(bytes)) == 0 else {
            let error = SystemError("ftruncate", "guest RAM (\(bytes >> 20) MiB)")
            close(fd)
            throw error
        }
        self.fd = fd
        self.ranges = Self.q35Layout(bytes: bytes)
    }

    deinit { close(fd) }

    /// q35 puts RAM below 4 GiB up to 2.75 GiB; a guest with at least that much gets
    /// 2 GiB below and the rest from 4 GiB up (QEMU's pc_q35_init, without
    /// max-ram-below-4g). The file holds the low part first, then the high part.
    static func q35Layout(bytes: UInt64) -> [GuestMemoryRange] {
        let lowmem: UInt64 = bytes >= 0xB000_0000 ? 0x8000_0000 : bytes
        var ranges = [GuestMemoryRange(guestPhysical: 0, fileOffset: 0, length: lowmem)]
        if bytes > lowmem {
            ranges.append(GuestMemoryRange(guestPhysical: 1 << 32, fileOffset: lowmem, length: bytes - lowmem))
        }
        return ranges
    }
}
