/// The embedded guests `hostvmm up --image` boots (architecture.md §5).
public enum GuestImageKind: String, CaseIterable, Sendable {
    /// busybox init + guest-agent in an initramfs: boots in seconds, no systemd.
    case `default`
    /// Debian bookworm with systemd, dbus, logind and a root autologin session
    /// on tty1, on a virtio disk (DesktopImageBuilder).
    case desktop

    /// One line for --help.
    public var summary: String {
        switch self {
        case .default:
            return "default: busybox init and guest-agent in an initramfs (Debian 6.12 kernel); builds in seconds, "
                + "boots in ~6 s under TCG"
        case .desktop:
            return "desktop: Debian 12 (bookworm) with systemd, dbus, logind and a root autologin session on tty1, "
                + "on a virtio disk; the first build runs debootstrap (~1.5-3 min, needs the network), later builds "
                + "reuse the cached base tree (~20 s); agent ready ~15-20 s, tty1 session ~20-25 s under TCG"
        }
    }

    /// `--memory` when none is given. systemd, journald, udevd, logind, dbus
    /// and a login session use ~100 MiB in the desktop guest; 1 GiB leaves
    /// room for what later features add (an X session) and for the page cache
    /// of a disk-backed root.
    public var defaultMemory: String {
        switch self {
        case .default: return "512M"
        case .desktop: return "1G"
        }
    }

    /// Builds (or finds in the cache) this image.
    public func build(cacheDir: String = ImageBuilder.defaultCacheDir(), agentPath: String? = nil,
                      force: Bool = false, log: @escaping (String) -> Void) throws -> GuestImage
    {
        switch self {
        case .default:
            return try ImageBuilder(cacheDir: cacheDir, agentPath: agentPath, log: log).build(force: force)
        case .desktop:
            return try DesktopImageBuilder(cacheDir: cacheDir, agentPath: agentPath, log: log).build(force: force)
        }
    }
}
