/// Commands our agent adds to the qemu-guest-agent protocol (protocol.md §1.9).
/// Named by QAPI's downstream-extension rule (`__RFQDN_name`), so they cannot
/// collide with a future qemu-ga command.
public enum QGAExtensions {
    /// Locks the guest's user sessions through logind; answers with which.
    public static let lockScreen = "__org.hostvmm_guest-lock-screen"
}
