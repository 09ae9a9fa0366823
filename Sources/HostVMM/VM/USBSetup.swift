import USBRedir

/// USB for a VM (issue #13): the controllers, the SPICE usbredir channels and
/// what clients may redirect through them.
///
/// Decisions: a VM has an xHCI (`qemu-xhci`, USB 1-3) and an EHCI (`usb-ehci`,
/// USB 2) controller unless `--no-usb`; host devices (`hostvmm usb attach`) are
/// hot-plugged onto the xHCI. SPICE channel N's `usb-redir` device sits on the
/// xHCI for even N and on the EHCI for odd N, so with the default two channels a
/// client's first device lands on xHCI and a second on EHCI (the one to use for a
/// USB 2 device on a client whose usbredir lacks what QEMU's xHCI path asks for).
public struct USBSetup: Sendable, Equatable {
    public enum Controller: String, Sendable { case xhci, ehci }

    /// Controllers at all (`--no-usb` turns them, the channels and host attach off).
    public var controllers = true
    /// SPICE usbredir channels (`--usb-redir N`; 0: none).
    public var redirChannels = 2
    /// What SPICE clients may redirect (`--usb-filter`); nil: everything.
    public var filter: USBRedirFilter?

    public static let maxRedirChannels = 16

    public init() {}

    /// The controller SPICE usbredir channel `channel` is on.
    public static func controller(forChannel channel: Int) -> Controller {
        channel % 2 == 0 ? .xhci : .ehci
    }

    /// The QEMU bus of a controller (its id plus ".0").
    public static func bus(_ controller: Controller) -> String { controller.rawValue + ".0" }
}
