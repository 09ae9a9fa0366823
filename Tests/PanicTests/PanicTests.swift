import AgentProtocol
import Foundation
import Testing
@testable import pvpanic

@Suite struct PanicEventTests {
    @Test func decodesQEMUsPanicEvents() {
        #expect(PanicEvent.decode(qmpEvent: "GUEST_PANICKED", data: ["action": "pause"]) == .panicked(action: "pause"))
        #expect(PanicEvent.decode(qmpEvent: "GUEST_CRASHLOADED", data: ["action": "run"]) == .crashLoaded)
        #expect(PanicEvent.decode(qmpEvent: "GUEST_PVSHUTDOWN", data: [:]) == .shutdownAnnounced)
        #expect(PanicEvent.decode(qmpEvent: "SHUTDOWN", data: [:]) == nil)
        #expect(PanicEvent.shutdownAnnounced.isCrash == false)
        #expect(PanicEvent.panicked(action: "pause").isCrash)
    }
}

@Suite struct PanicPolicyTests {
    @Test func threePanicsInTenMinutesIsALoop() {
        var guardian = CrashLoopGuard()
        #expect(guardian.record(at: 0) == false)
        #expect(guardian.record(at: 100) == false)
        #expect(guardian.record(at: 599) == true)
        var spread = CrashLoopGuard()
        #expect(spread.record(at: 0) == false)
        #expect(spread.record(at: 400) == false)
        #expect(spread.record(at: 800) == false, "the first panic left the window")
    }

    @Test func actions() {
        #expect(PanicPolicy.restart.action(crashLoop: false) == .reset)
        guard case .stayPaused(let why) = PanicPolicy.restart.action(crashLoop: true) else {
            Issue.record("a crash loop must pause")
            return
        }
        #expect(why.contains("crash loop"))
        #expect(PanicPolicy.poweroff.action(crashLoop: false) == .powerOff)
        #expect(PanicPolicy.pause.action(crashLoop: false) == .stayPaused(reason: "policy pause"))
    }
}

@Suite struct ConsoleTailTests {
    @Test func findsThePanicLineInACRLFConsole() {
        let console = "[    1.0] booting\r\n[    3.360445] sysrq: Trigger a crash\r\n"
            + "[    3.361277] Kernel panic - not syncing: sysrq triggered crash\r\n[    3.36] CPU: 0 PID: 157\r\n"
        #expect(ConsoleTail.summary(console) == "Kernel panic - not syncing: sysrq triggered crash")
        #expect(ConsoleTail.summary("all quiet\n") == nil)
        #expect(ConsoleTail.summary("[ 2.0] BUG: kernel NULL pointer dereference\n") == "BUG: kernel NULL pointer dereference")
    }

    @Test func tailStartsAtALineBoundary() {
        let log = Array((String(repeating: "x", count: 100) + "\n" + String(repeating: "y", count: 50)).utf8)
        let tail = ConsoleTail.tail(log, bytes: 60)
        #expect(tail == Array(String(repeating: "y", count: 50).utf8))
        #expect(ConsoleTail.tail(log, bytes: 1000) == log)
    }
}

@Suite struct ELFCoreTests {
    /// A minimal ELF64 core header with two PT_LOAD and one PT_NOTE program headers.
    static func coreHeader(loads: [UInt64]) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: 64 + 56 * (loads.count + 1))
        b[0...3] = [0x7F, 0x45, 0x4C, 0x46]
        b[4] = 2; b[5] = 1; b[6] = 1
        func put(_ v: UInt64, at o: Int, _ n: Int) { for i in 0..<n { b[o + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(i))) } }
        put(4, at: 16, 2)  // ET_CORE
        put(62, at: 18, 2)  // EM_X86_64
        put(64, at: 32, 8)  // e_phoff
        put(56, at: 54, 2)
        put(UInt64(loads.count + 1), at: 56, 2)
        put(4, at: 64, 4)  // PT_NOTE first
        for (i, size) in loads.enumerated() {
            let o = 64 + 56 * (i + 1)
            put(1, at: o, 4)
            put(size, at: o + 40, 8)
        }
        return b
    }

    @Test func readsLoadSegments() {
        let core = ELFCore.parse(Self.coreHeader(loads: [128 << 20, 384 << 20]))
        #expect(core?.machine == 62 && core?.loadSegments == 2 && core?.loadBytes == 512 << 20 && core?.noteSegments == 1)
    }

    /// Our writer's layout, read back by the reader: QEMU's notes first, one PT_LOAD
    /// per range at guest-physical addresses, data page aligned and in range order.
    @Test func writerLayoutReadsBack() throws {
        let notes = [UInt8](repeating: 0xAB, count: 1000)
        let ranges = [GuestMemoryRange(guestPhysical: 0, fileOffset: 0, length: 2 << 30),
                      GuestMemoryRange(guestPhysical: 4 << 30, fileOffset: 2 << 30, length: 1 << 30)]
        let writer = ELFCoreWriter(notes: notes, ranges: ranges)
        let core = try #require(ELFCore.parse(writer.header))
        #expect(core.machine == 62 && core.noteSegments == 1 && core.loadSegments == 2 && core.loadBytes == 3 << 30)
        #expect(core.notes?.offset == 64 + 56 * 3 && core.notes?.size == 1000)
        #expect(ELFCoreWriter.notes(of: writer.header) == notes)
        #expect(core.loads.map(\.physical) == [0, 4 << 30])
        #expect(core.loads.map(\.offset) == [4096, 4096 + (2 << 30)])
        #expect(writer.dataOffsets == [4096, 4096 + (2 << 30)] && writer.fileSize == 4096 + (3 << 30))
        // Notes that spill past the first page push the data to the next page boundary.
        let big = ELFCoreWriter(notes: [UInt8](repeating: 1, count: 5000), ranges: ranges)
        #expect(big.dataOffsets.first == 8192)
        // A header cut short of its notes yields no notes rather than a wrong slice.
        #expect(ELFCoreWriter.notes(of: Array(writer.header.prefix(400))) == nil)
    }

    @Test func refusesForeignOrShortInput() {
        #expect(ELFCore.parse([]) == nil)
        #expect(ELFCore.parse(Array("not an elf file at all, not at all, not at all, not at all......".utf8)) == nil)
        var truncated = Self.coreHeader(loads: [1 << 20])
        truncated.removeLast(20)
        #expect(ELFCore.parse(truncated) == nil)
    }
}

@Suite struct CrashStoreTests {
    @Test func keepsTheNewestAndNeverPrunesPreserved() throws {
        let dir = "/tmp/crashstore-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = CrashStore(stateDirectory: dir, keep: 2)
        var made: [String] = []
        for i in 0..<4 {
            let staged = try store.create(kind: "panicked", at: Date(timeIntervalSince1970: Double(1_800_000_000 + i)))
            try store.write("{\"n\": \(i)}\n", to: staged, file: "event.json")
            let b = try store.commit(staged)
            made.append(b)
            if i == 0 { try store.markPreserved(b) }
        }
        let removed = store.prune()
        #expect(removed == [made[1]])
        let left = store.list().map(\.path)
        #expect(left == [made[0], made[2], made[3]])
        #expect(store.list().last?.event?["n"] == .int(3))
        let attributes = try FileManager.default.attributesOfItem(atPath: "\(made[3])/event.json")
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
    }

    /// A capture cut short is never listed as a bundle, and a write that fails says
    /// why and leaves no truncated file (the disk is full: /dev/full stands in for it).
    @Test func aBundleIsListedOnlyOnceCommittedAndAFailedWriteLeavesNothing() throws {
        let dir = "/tmp/crashstore-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = CrashStore(stateDirectory: dir)
        let staged = try store.create(kind: "panicked")
        #expect((staged as NSString).lastPathComponent.hasPrefix("."))
        try store.write("console\n", to: staged, file: "console.txt")
        #expect(store.list().isEmpty, "a staged bundle was listed")

        try FileManager.default.createSymbolicLink(atPath: "\(staged)/vmcore", withDestinationPath: "/dev/full")
        #expect {
            try store.write([UInt8](repeating: 1, count: 1 << 20), to: staged, file: "vmcore")
        } throws: { error in
            "\(error)".contains("No space left on device")
        }
        #expect(!FileManager.default.fileExists(atPath: "\(staged)/vmcore"), "the failed file stayed")

        let bundle = try store.commit(staged)
        #expect(store.list().map(\.path) == [bundle])
        #expect(FileManager.default.fileExists(atPath: "\(bundle)/console.txt"))
        store.discard(try store.create(kind: "panicked"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: store.root).count == 1)
    }
}
