import USBRedir

/// What a SPICE client's usbredir channel sends towards QEMU, and the filter
/// rules a person types.
enum USBRedirTargets {
    static let all: [FuzzTarget] = [
        FuzzTarget(name: "usbredir-stream", run: usbredirStream),
        FuzzTarget(name: "usbredir-filter", run: usbredirFilter),
    ]

    /// A fixed QEMU hello (QEMU 10's capabilities, as QEMU sends it), then the
    /// client's bytes in fuzzer-chosen reads. Whatever the guard forwards it
    /// forwards unchanged and in order; once it refuses, it refuses for good.
    static func usbredirStream(_ input: [UInt8]) {
        var reader = FuzzReader(input)
        let seed = reader.u8()
        let helloFirst = reader.u8() & 1 == 0
        let stream = reader.rest()
        let guardian = USBRedirStreamGuard()
        var forwarded: [UInt8] = []
        var refused = false
        func take(_ verdict: USBRedirStreamGuard.Verdict) {
            switch verdict {
            case .forward(let bytes, _):
                require(!refused, "forwarded after a refusal")
                forwarded += bytes
            case .refuse:
                refused = true
            }
        }
        if helloFirst { take(guardian.fromQEMU(qemuHello).verdict) }
        for piece in pieces(stream, seed: seed) { take(guardian.fromDevice(piece)) }
        if !helloFirst { take(guardian.fromQEMU(qemuHello).verdict) }
        require(stream.starts(with: forwarded), "forwarded \(forwarded.count) bytes that are not the stream's start")
        // The observer alone (both directions, as hostvmm's events see them).
        var observer = USBRedirObserver()
        _ = observer.feed(qemuHello, from: .fromQEMU)
        for piece in pieces(stream, seed: seed) { _ = observer.feed(piece, from: .fromDevice) }
    }

    /// usb_redir_hello from QEMU 10: type 0, length 68, id 0, version string, caps.
    static let qemuHello: [UInt8] = {
        var b: [UInt8] = []
        func u32(_ v: UInt32) { b += [UInt8(v & 0xFF), UInt8(v >> 8 & 0xFF), UInt8(v >> 16 & 0xFF), UInt8(v >> 24)] }
        u32(0); u32(68); u32(0)
        var version = Array("qemu usb-redir guest 10.0.2".utf8)
        version += [UInt8](repeating: 0, count: 64 - version.count)
        b += version
        u32(0x1FFF)  // every capability QEMU 10 announces (bits 0-12)
        return b
    }()

    /// Parsing never accepts what it cannot print back.
    static func usbredirFilter(_ input: [UInt8]) {
        let text = String(decoding: input, as: UTF8.self)
        guard let filter = try? USBRedirFilter(parsing: text) else { return }
        let printed = filter.description
        guard let again = try? USBRedirFilter(parsing: printed) else {
            fatalError("invariant broken: our own rendering \(printed) does not parse")
        }
        require(again == filter, "\(text) -> \(printed) parsed differently")
        _ = filter.allows(vendorID: 0x1234, productID: 0x5678, versionBCD: 0x0200, classes: [0x08])
    }
}
