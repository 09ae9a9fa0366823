import Foundation
import Glibc
import LinuxSystem
import Testing
import pvpanic
@testable import HostVMM

/// The vmcore copy from hostvmm's guest RAM memfd (issue #17), on a real memfd:
/// what it writes, what it leaves as holes, and what it refuses.
@Suite struct GuestMemoryDumpTests {
    static let page = 4096

    func scratch(_ name: String) -> String { "/tmp/gmd-\(getpid())-\(name)-\(UInt32.random(in: 0...UInt32.max))" }

    @Test func q35LayoutSplitsAtTwoAndThreeQuarterGiB() {
        #expect(GuestRAM.q35Layout(bytes: 1 << 30) == [GuestMemoryRange(guestPhysical: 0, fileOffset: 0, length: 1 << 30)])
        #expect(GuestRAM.q35Layout(bytes: 0xAFF0_0000).count == 1)
        #expect(GuestRAM.q35Layout(bytes: 4 << 30) == [
            GuestMemoryRange(guestPhysical: 0, fileOffset: 0, length: 2 << 30),
            GuestMemoryRange(guestPhysical: 4 << 30, fileOffset: 2 << 30, length: 2 << 30),
        ])
    }

    @Test func copiesNonZeroPagesAndLeavesHoles() throws {
        let ram = try GuestRAM(bytes: 64 << 20, vmName: "dump-test")
        // Data in the first page, mid-file (two pages in a row), and the last page; one
        // page the guest touched but left zero; the rest never touched.
        let marked: [(Int, UInt8)] = [(0, 0x11), (5 << 20, 0x22), ((5 << 20) + Self.page, 0x33), ((64 << 20) - Self.page, 0x44)]
        for (offset, byte) in marked {
            let data = [UInt8](repeating: byte, count: Self.page)
            #expect(pwrite(ram.fd, data, data.count, off_t(offset)) == data.count)
        }
        let zeros = [UInt8](repeating: 0, count: Self.page)
        #expect(pwrite(ram.fd, zeros, zeros.count, off_t(10 << 20)) == zeros.count)
        let notes = Array("CORE notes stand-in".utf8)
        let path = scratch("core")
        defer { unlink(path) }

        let outcome = try GuestMemoryDump.write(ramFD: ram.fd, ranges: ram.ranges, notes: notes, to: path)
        let layout = ELFCoreWriter(notes: notes, ranges: ram.ranges)
        #expect(outcome.fileBytes == layout.fileSize)
        #expect(outcome.copiedBytes == UInt64(marked.count * Self.page), "only the non-zero pages are written")
        // The header page plus four data pages; ext4 and tmpfs allocate 4 KiB blocks.
        #expect(outcome.allocatedBytes <= UInt64(8 * Self.page), "sparse: \(outcome.allocatedBytes) bytes allocated")

        let file = try #require(FileHandle(forReadingAtPath: path))
        defer { try? file.close() }
        let header = Array(file.readData(ofLength: 4096))
        let core = try #require(ELFCore.parse(header))
        #expect(ELFCoreWriter.notes(of: header) == notes)
        #expect(core.loads.count == 1 && core.loads[0].physical == 0 && core.loads[0].size == 64 << 20)
        func page(at guestPhysical: Int) throws -> [UInt8] {
            try file.seek(toOffset: core.loads[0].offset + UInt64(guestPhysical))
            return Array(file.readData(ofLength: Self.page))
        }
        for (offset, byte) in marked {
            #expect(try page(at: offset) == [UInt8](repeating: byte, count: Self.page), "page at \(offset)")
        }
        #expect(try page(at: 10 << 20) == zeros)
        #expect(try page(at: 32 << 20) == zeros)
    }

    @Test func neverReplacesAFileAndLeavesNothingOnFailure() throws {
        let ram = try GuestRAM(bytes: 1 << 20, vmName: "dump-test")
        let existing = scratch("existing")
        #expect(FileManager.default.createFile(atPath: existing, contents: Data("keep me".utf8)))
        defer { unlink(existing) }
        #expect(throws: SystemError.self) {
            try GuestMemoryDump.write(ramFD: ram.fd, ranges: ram.ranges, notes: [], to: existing)
        }
        #expect(try String(contentsOfFile: existing, encoding: .utf8) == "keep me")
        // A descriptor that is not the RAM: the copy fails and removes its partial file.
        let path = scratch("bad")
        #expect(throws: SystemError.self) {
            try GuestMemoryDump.write(ramFD: -1, ranges: ram.ranges, notes: [], to: path)
        }
        #expect(access(path, F_OK) != 0)
    }
}
