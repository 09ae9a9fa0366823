import Glibc
import LinuxSystem
import pvpanic

/// Writes an ELF vmcore straight from the guest's RAM file (issue #17): QEMU's
/// notes, then every RAM range at its page-aligned place, sparse. Pages the guest
/// never touched are holes in the memfd (SEEK_DATA skips them without reading) and
/// pages of zeros are not written, so they stay holes in the core too; what is
/// left is copied with pread/pwrite a megabyte at a time. Blocking: run it off the
/// event loop, while QEMU holds the guest paused.
enum GuestMemoryDump {
    struct Outcome {
        /// The core's length (what `ls -l` shows).
        var fileBytes: UInt64
        /// Guest memory copied into it (non-zero pages).
        var copiedBytes: UInt64
        /// Disk space it takes (st_blocks).
        var allocatedBytes: UInt64
        var seconds: Double
    }

    static let chunkBytes = 1 << 20
    static let pageBytes = 4096
    /// lseek(2) whences Glibc's module leaves out (_GNU_SOURCE).
    static let seekData: Int32 = 3, seekHole: Int32 = 4

    /// Creates `path` (0600; it must not exist) and writes the core; on failure the
    /// partial file is removed and the error names what failed.
    static func write(ramFD: Int32, ranges: [GuestMemoryRange], notes: [UInt8], to path: String)
        throws(SystemError) -> Outcome
    {
        let started = EventLoop.now()
        let out = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard out >= 0 else { throw SystemError("open", path) }
        var ok = false
        defer {
            close(out)
            if !ok { unlink(path) }
        }
        let layout = ELFCoreWriter(notes: notes, ranges: ranges)
        try writeAll(out, layout.header, at: 0, path)
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: chunkBytes, alignment: pageBytes)
        defer { buffer.deallocate() }
        let zeros = UnsafeMutableRawPointer.allocate(byteCount: pageBytes, alignment: pageBytes)
        defer { zeros.deallocate() }
        memset(zeros, 0, pageBytes)
        var copied: UInt64 = 0
        for (range, base) in zip(ranges, layout.dataOffsets) {
            var position = off_t(range.fileOffset)
            let end = off_t(range.fileOffset + range.length)
            while position < end {
                let data = lseek(ramFD, position, seekData)
                if data < 0 {
                    if errno == ENXIO { break }  // nothing but holes from here to the end of the file
                    throw SystemError("lseek(SEEK_DATA)", "guest RAM")
                }
                if data >= end { break }
                let hole = lseek(ramFD, data, seekHole)
                guard hole >= 0 else { throw SystemError("lseek(SEEK_HOLE)", "guest RAM") }
                var at = data
                let extentEnd = min(hole, end)
                while at < extentEnd {
                    let want = extentEnd - at < chunkBytes ? Int(extentEnd - at) : chunkBytes
                    let got = pread(ramFD, buffer, want, at)
                    guard got > 0 else { throw SystemError("pread", "guest RAM") }
                    let target = off_t(base) + (at - off_t(range.fileOffset))
                    copied += try writeNonZeroPages(out, buffer, got, at: target, zeros: zeros, path)
                    at += off_t(got)
                }
                position = extentEnd
            }
        }
        // The length covers every range; what was not written reads as zeros (holes).
        guard ftruncate(out, off_t(layout.fileSize)) == 0 else { throw SystemError("ftruncate", path) }
        var st = stat()
        guard fstat(out, &st) == 0 else { throw SystemError("fstat", path) }
        ok = true
        return Outcome(fileBytes: layout.fileSize, copiedBytes: copied, allocatedBytes: UInt64(st.st_blocks) * 512,
                       seconds: Double(EventLoop.now() - started) / 1000)
    }

    /// Writes the runs of non-zero pages in `bytes` at `offset` onwards; returns how
    /// many bytes it wrote.
    private static func writeNonZeroPages(_ fd: Int32, _ bytes: UnsafeMutableRawPointer, _ count: Int, at offset: off_t,
                                          zeros: UnsafeRawPointer, _ path: String) throws(SystemError) -> UInt64
    {
        var written: UInt64 = 0
        var runStart: Int?
        func flush(upTo end: Int) throws(SystemError) {
            guard let start = runStart else { return }
            try writeAll(fd, UnsafeRawBufferPointer(start: bytes + start, count: end - start), at: offset + off_t(start), path)
            written += UInt64(end - start)
            runStart = nil
        }
        for page in stride(from: 0, to: count, by: pageBytes) {
            if memcmp(bytes + page, zeros, min(pageBytes, count - page)) != 0 {
                if runStart == nil { runStart = page }
            } else {
                try flush(upTo: page)
            }
        }
        try flush(upTo: count)
        return written
    }

    private static func writeAll(_ fd: Int32, _ bytes: [UInt8], at offset: off_t, _ path: String) throws(SystemError) {
        let failed = bytes.withUnsafeBytes { pwriteAll(fd, $0, at: offset) }
        if failed != 0 { throw SystemError("write", path, errno: failed) }
    }

    private static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, at offset: off_t, _ path: String)
        throws(SystemError)
    {
        let failed = pwriteAll(fd, bytes, at: offset)
        if failed != 0 { throw SystemError("write", path, errno: failed) }
    }

    /// pwrite until every byte is written; 0, or the errno that stopped it.
    private static func pwriteAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, at offset: off_t) -> Int32 {
        var done = 0
        while done < bytes.count {
            let n = pwrite(fd, bytes.baseAddress! + done, bytes.count - done, offset + off_t(done))
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return n == 0 ? EIO : errno }
            done += n
        }
        return 0
    }
}
