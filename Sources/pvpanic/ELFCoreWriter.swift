/// A piece of guest RAM: `length` bytes at guest-physical `guestPhysical`, found at
/// `fileOffset` in the memory file that backs the guest.
public struct GuestMemoryRange: Sendable, Equatable {
    public var guestPhysical: UInt64
    public var fileOffset: UInt64
    public var length: UInt64

    public init(guestPhysical: UInt64, fileOffset: UInt64, length: UInt64) {
        self.guestPhysical = guestPhysical
        self.fileOffset = fileOffset
        self.length = length
    }
}

/// The layout of an ELF core of guest memory as QEMU's `dump-guest-memory`
/// (paging=false) writes it, so tools that read QEMU's read ours (gdb is tested)
/// (issue #17): an x86-64 ET_CORE header, one PT_NOTE with QEMU's notes (CORE
/// NT_PRSTATUS and QEMU's CPU state per vCPU, VMCOREINFO when the guest has it)
/// first, then one PT_LOAD per RAM range with p_vaddr == p_paddr (guest-physical
/// addresses, no page tables walked). Memory data starts page aligned so that a
/// sparse copy can leave untouched pages as holes. Bytes only; the caller writes.
public struct ELFCoreWriter: Sendable {
    public let header: [UInt8]
    /// Where each range's bytes go in the file, in the order of `ranges`.
    public let dataOffsets: [UInt64]
    /// The file's full length.
    public let fileSize: UInt64

    static let pageSize: UInt64 = 4096
    static let EM_X86_64: UInt16 = 62

    public init(notes: [UInt8], ranges: [GuestMemoryRange]) {
        let phnum = 1 + ranges.count
        let phoff = 64
        let notesOffset = phoff + 56 * phnum
        var offset = (UInt64(notesOffset + notes.count) + Self.pageSize - 1) / Self.pageSize * Self.pageSize
        var offsets: [UInt64] = []
        for r in ranges {
            offsets.append(offset)
            offset += r.length
        }
        dataOffsets = offsets
        fileSize = offset

        var out: [UInt8] = []
        out.reserveCapacity(notesOffset + notes.count)
        // e_ident: magic, ELFCLASS64, ELFDATA2LSB, EV_CURRENT, ELFOSABI_NONE, padding.
        out += [0x7F, 0x45, 0x4C, 0x46, 2, 1, 1, 0] + [UInt8](repeating: 0, count: 8)
        Self.put16(&out, ELFCore.ET_CORE)
        Self.put16(&out, Self.EM_X86_64)
        Self.put32(&out, 1)  // e_version
        Self.put64(&out, 0)  // e_entry
        Self.put64(&out, UInt64(phoff))
        Self.put64(&out, 0)  // e_shoff: no section headers
        Self.put32(&out, 0)  // e_flags
        Self.put16(&out, 64)  // e_ehsize
        Self.put16(&out, 56)  // e_phentsize
        Self.put16(&out, UInt16(phnum))
        Self.put16(&out, 64)  // e_shentsize
        Self.put16(&out, 0)  // e_shnum
        Self.put16(&out, 0)  // e_shstrndx
        Self.programHeader(&out, type: ELFCore.PT_NOTE, offset: UInt64(notesOffset), address: 0,
                           size: UInt64(notes.count))
        for (r, o) in zip(ranges, offsets) {
            Self.programHeader(&out, type: ELFCore.PT_LOAD, offset: o, address: r.guestPhysical, size: r.length)
        }
        out += notes
        header = out
    }

    /// QEMU's PT_LOAD and PT_NOTE entries: flags and alignment 0, file size == memory size.
    private static func programHeader(_ out: inout [UInt8], type: UInt32, offset: UInt64, address: UInt64,
                                      size: UInt64) {
        put32(&out, type)
        put32(&out, 0)  // p_flags
        put64(&out, offset)
        put64(&out, address)  // p_vaddr
        put64(&out, address)  // p_paddr
        put64(&out, size)  // p_filesz
        put64(&out, size)  // p_memsz
        put64(&out, 0)  // p_align
    }

    private static func put16(_ out: inout [UInt8], _ v: UInt16) { out += [UInt8(v & 0xFF), UInt8(v >> 8)] }
    private static func put32(_ out: inout [UInt8], _ v: UInt32) { for i in 0..<4 { out.append(UInt8((v >> (8 * i)) & 0xFF)) } }
    private static func put64(_ out: inout [UInt8], _ v: UInt64) { for i in 0..<8 { out.append(UInt8((v >> (8 * i)) & 0xFF)) } }

    /// The notes of an ELF core (QEMU's), given its first bytes: nil if `core` is not
    /// an ELF core or its PT_NOTE does not lie within `core`.
    public static func notes(of core: [UInt8]) -> [UInt8]? {
        guard let parsed = ELFCore.parse(core), let (offset, size) = parsed.notes,
              let start = Int(exactly: offset), let count = Int(exactly: size), start + count <= core.count
        else { return nil }
        return Array(core[start..<(start + count)])
    }
}
