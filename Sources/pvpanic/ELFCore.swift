import AgentProtocol

/// Reads the headers of an ELF core file such as QEMU's dump-guest-memory
/// writes, enough to check it: 64-bit little-endian ELF of type CORE and how
/// many bytes of guest memory its PT_LOAD segments cover. Field by field at
/// explicit offsets (style.md §4), nil on anything short or foreign.
public struct ELFCore: Sendable, Equatable {
    public var machine: UInt16
    public var loadSegments: Int
    /// Sum of PT_LOAD p_memsz: the guest memory the dump covers.
    public var loadBytes: UInt64
    public var noteSegments: Int
    /// Where the first PT_NOTE's bytes lie in the file (offset, size), if there is one.
    public var notes: (offset: UInt64, size: UInt64)?
    /// Each PT_LOAD: guest-physical address, file offset and size in the file.
    public var loads: [(physical: UInt64, offset: UInt64, size: UInt64)] = []

    public static func == (a: ELFCore, b: ELFCore) -> Bool {
        a.machine == b.machine && a.loadSegments == b.loadSegments && a.loadBytes == b.loadBytes
            && a.noteSegments == b.noteSegments && a.notes?.offset == b.notes?.offset && a.notes?.size == b.notes?.size
            && a.loads.elementsEqual(b.loads, by: { $0 == $1 })
    }

    static let ET_CORE: UInt16 = 4
    static let PT_LOAD: UInt32 = 1
    static let PT_NOTE: UInt32 = 4

    /// `header` must hold the ELF header and the program header table
    /// (the first few KiB of the file).
    public static func parse(_ header: [UInt8]) -> ELFCore? {
        let r = LEReader(header[...])
        let (u16, u32, u64) = (r.u16, r.u32, r.u64)
        // e_ident: magic, class 2 (64-bit), data 1 (little-endian).
        guard header.count >= 64, header[0..<4] == [0x7F, 0x45, 0x4C, 0x46], header[4] == 2, header[5] == 1,
              u16(16) == ET_CORE, let machine = u16(18), let phoff = u64(32), let phentsize = u16(54),
              let phnum = u16(56), phentsize >= 56, let base = Int(exactly: phoff)
        else { return nil }
        var core = ELFCore(machine: machine, loadSegments: 0, loadBytes: 0, noteSegments: 0)
        for i in 0..<Int(phnum) {
            let o = base + i * Int(phentsize)
            guard let type = u32(o), let offset = u64(o + 8), let paddr = u64(o + 24), let filesz = u64(o + 32),
                  let memsz = u64(o + 40)
            else { return nil }
            if type == PT_LOAD {
                core.loadSegments += 1
                core.loadBytes += memsz
                core.loads.append((paddr, offset, filesz))
            } else if type == PT_NOTE {
                core.noteSegments += 1
                if core.notes == nil { core.notes = (offset, filesz) }
            }
        }
        return core
    }
}
