#if canImport(Glibc)
import Glibc
#endif

/// libFuzzer's entry points. One binary holds every target, so scripts/fuzz.sh
/// links once; `HOSTVMM_FUZZ_TARGET` names the target a run drives (libFuzzer
/// owns the command line).
nonisolated(unsafe) private var selected: FuzzTarget?

@_cdecl("LLVMFuzzerInitialize")
public func fuzzInitialize(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> CInt {
    let name = getenv("HOSTVMM_FUZZ_TARGET").map { String(cString: $0) } ?? ""
    guard let target = FuzzTarget.all.first(where: { $0.name == name }) else {
        let names = FuzzTarget.all.map(\.name).joined(separator: " ")
        let message = Array("HOSTVMM_FUZZ_TARGET must name one of: \(names)\n".utf8)
        _ = write(2, message, message.count)
        exit(2)
    }
    selected = target
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = size == 0 ? [] : Array(UnsafeBufferPointer(start: data, count: size))
    selected!.run(bytes)
    return 0
}

/// One fuzz target: a parser fed arbitrary bytes, with the invariants it must keep.
struct FuzzTarget: Sendable {
    let name: String
    let run: @Sendable ([UInt8]) -> Void

    static let all: [FuzzTarget] = AgentProtocolTargets.all + VirtioTargets.all + USBRedirTargets.all
}

/// A broken invariant is a crash, so libFuzzer keeps the input that broke it.
func require(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String,
             file: StaticString = #fileID, line: UInt = #line) {
    if !condition() { fatalError("invariant broken: \(message())", file: file, line: line) }
}

/// Reads a fuzz input as a sequence of small decisions; past the end every read is zero.
struct FuzzReader {
    private let bytes: [UInt8]
    private(set) var offset = 0
    init(_ bytes: [UInt8]) { self.bytes = bytes }

    var isAtEnd: Bool { offset >= bytes.count }
    var remaining: Int { max(0, bytes.count - offset) }

    mutating func u8() -> UInt8 {
        defer { offset += 1 }
        return offset < bytes.count ? bytes[offset] : 0
    }

    mutating func u16() -> UInt16 { UInt16(u8()) | UInt16(u8()) << 8 }

    mutating func take(_ count: Int) -> [UInt8] {
        let start = min(offset, bytes.count)
        let n = min(count, bytes.count - start)
        offset = start + n
        return Array(bytes[start..<start + n])
    }

    mutating func rest() -> [UInt8] { take(remaining) }
}

/// Cuts `bytes` into pieces whose sizes come from `seed`, as reads from a
/// socket might: for checking that a stream parser does not care where reads end.
func pieces(_ bytes: [UInt8], seed: UInt8) -> [[UInt8]] {
    var out: [[UInt8]] = []
    var at = 0
    var step = Int(seed)
    while at < bytes.count {
        step = (step &* 37 &+ 11) & 0xFF
        let n = min(bytes.count - at, step % 23 + 1)
        out.append(Array(bytes[at..<at + n]))
        at += n
    }
    return out
}

/// Feeds `stream` to one parser in a single read and to a second one in the reads
/// `seed` cuts, checking `each` after every read; requires the same outputs from
/// both, and returns them with the single-read parser.
func sameHoweverRead<Parser, Element: Equatable>(
    _ stream: [UInt8], seed: UInt8, _ make: () -> Parser, _ feed: (inout Parser, [UInt8]) -> [Element],
    each: (Parser) -> Void = { _ in }
) -> (outputs: [Element], parser: Parser) {
    var whole = make()
    let expected = feed(&whole, stream)
    each(whole)
    var split = make()
    var got: [Element] = []
    for piece in pieces(stream, seed: seed) {
        got += feed(&split, piece)
        each(split)
    }
    require(got == expected, "split reads gave \(got.count) outputs, one read \(expected.count)")
    return (expected, whole)
}
