import CUSBRedirGuard

/// Stands between a usbredir peer that has the device (a SPICE client, untrusted)
/// and QEMU's usb-redir: the peer's bytes reach QEMU only once libusbredirparser,
/// in QEMU's role and with QEMU's capabilities, has parsed them without error.
/// QEMU 10 aborts when its parser fails on a packet that has more bytes behind it
/// (hw/usb/redirect.c asserts `read_buf == NULL`), so a stream that fails here is
/// cut instead of passed on.
///
/// Until QEMU's hello has arrived (it decides header sizes) the peer's bytes are
/// held. Both directions also go through a USBRedirObserver for the events.
public final class USBRedirStreamGuard {
    private var guardState: OpaquePointer?
    private var held: [UInt8] = []
    private var observer = USBRedirObserver()
    public private(set) var refusal: String?
    /// Bytes held for QEMU's hello at most; a peer that sends more first is cut.
    public static let holdLimit = 1 << 20

    public init() {}

    deinit { usbredir_guard_free(guardState) }

    public enum Verdict: Equatable {
        /// Pass these to QEMU (possibly none yet).
        case forward([UInt8], [USBRedirObserver.Event])
        /// Cut the connection to QEMU; the reason says what was wrong.
        case refuse(String)
    }

    /// The peer's bytes.
    public func fromDevice(_ bytes: [UInt8]) -> Verdict {
        if let refusal { return .refuse(refusal) }
        guard let g = guardState else {
            held += bytes
            if held.count > Self.holdLimit { return refuse("more than 1 MiB before QEMU's hello") }
            return .forward([], [])
        }
        return check(g, bytes)
    }

    /// QEMU's bytes (they go to the peer unchanged): events, and the peer's held bytes
    /// once QEMU's hello has been seen (or a refusal).
    public func fromQEMU(_ bytes: [UInt8]) -> (events: [USBRedirObserver.Event], verdict: Verdict) {
        let events = observer.feed(bytes, from: .fromQEMU)
        guard guardState == nil, let hello = observer.qemuHello else { return (events, .forward([], [])) }
        guardState = hello.capabilities.withUnsafeBufferPointer {
            usbredir_guard_new($0.baseAddress, Int32($0.count))
        }
        guard let g = guardState else { return (events, refuse("libusbredirparser could not be set up")) }
        let pending = held
        held = []
        return (events, pending.isEmpty ? .forward([], []) : check(g, pending))
    }

    private func check(_ g: OpaquePointer, _ bytes: [UInt8]) -> Verdict {
        let r = bytes.withUnsafeBufferPointer { usbredir_guard_feed(g, $0.baseAddress, Int32($0.count)) }
        guard r == 0 else { return refuse(String(cString: usbredir_guard_error(g))) }
        return .forward(bytes, observer.feed(bytes, from: .fromDevice))
    }

    private func refuse(_ why: String) -> Verdict {
        refusal = why
        held = []
        return .refuse(why)
    }
}
