import Foundation
import LinuxSystem

/// External programs the image builder runs, each with the Debian package that
/// provides it, so a missing one is an error a person can act on.
public enum HostTool: String, CaseIterable, Sendable {
    case aptGet = "apt-get"
    case aptCache = "apt-cache"
    case dpkgDeb = "dpkg-deb"
    case depmod
    case xz
    case busybox
    case ldd
    case sha256sum
    // The desktop image (DesktopImageBuilder) only:
    case debootstrap
    case mkfsExt4 = "mkfs.ext4"
    case tar
    // Each desktop VM's copy-on-write overlay of the cached disk (DiskOverlay).
    case qemuImg = "qemu-img"
    /// Debian's ALSA player; the guest gets it (and arecord, its other name) with its libraries.
    case aplay

    /// What the default (busybox initramfs) image needs.
    static let defaultImage: [HostTool] = [.aptGet, .aptCache, .dpkgDeb, .depmod, .xz, .busybox, .ldd, .sha256sum, .aplay]
    /// What the desktop image needs on top (qemu-img is checked when a VM starts).
    static let desktopImage: [HostTool] = defaultImage + [.debootstrap, .mkfsExt4, .tar]

    public var package: String {
        switch self {
        case .aptGet, .aptCache: return "apt"
        case .dpkgDeb: return "dpkg"
        case .depmod: return "kmod"
        case .xz: return "xz-utils"
        case .busybox: return "busybox-static"
        case .ldd: return "libc-bin"
        case .sha256sum: return "coreutils"
        case .debootstrap: return "debootstrap"
        case .mkfsExt4: return "e2fsprogs"
        case .tar: return "tar"
        case .qemuImg: return "qemu-utils"
        case .aplay: return "alsa-utils"
        }
    }

    /// The absolute path, or an error naming the package.
    public func locate() throws(ImageBuildError) -> String {
        let env = Subprocess.currentEnvironment().map {
            // /sbin holds depmod; root's PATH may lack it.
            $0.hasPrefix("PATH=") ? $0 + ":/usr/sbin:/sbin:/usr/bin:/bin" : $0
        }
        let path = Subprocess.resolve(rawValue, environment: env)
        guard path.hasPrefix("/"), FileManager.default.isExecutableFile(atPath: path) else {
            throw .missingTool(tool: rawValue, package: package)
        }
        return path
    }
}

public enum ImageBuildError: Error, CustomStringConvertible {
    case missingTool(tool: String, package: String)
    case notStaticBusybox(String)
    case noKernelPackage(String)
    case commandFailed(String)
    case agentNotStatic(String, [String])
    case noSourceTree
    case invalid(String)

    public var description: String {
        switch self {
        case .missingTool(let tool, let package):
            return "'\(tool)' not found: install the Debian package \(package) (scripts/setup.sh installs everything)"
        case .notStaticBusybox(let path):
            return "\(path) is not the static busybox: install the Debian package busybox-static"
        case .noKernelPackage(let why):
            return "no Debian 6.12 kernel package (linux-image-6.12.*-amd64-unsigned) is available: \(why). "
                + "It comes from bookworm-backports: add 'deb http://deb.debian.org/debian bookworm-backports main' "
                + "to the apt sources and run apt-get update (scripts/setup.sh does both)"
        case .commandFailed(let s):
            return s
        case .agentNotStatic(let path, let libs):
            return "\(path) links the Swift runtime dynamically (\(libs.joined(separator: ", "))); "
                + "build it with: swift build -c release --static-swift-stdlib --product guest-agent"
        case .noSourceTree:
            return "cannot find the hostvmm source tree to build guest-agent from; pass --agent PATH "
                + "or set HOSTVMM_SOURCE_DIR"
        case .invalid(let s):
            return s
        }
    }
}

/// Runs a tool to completion; stdout is returned as text.
public func runTool(_ argv: [String], in directory: String? = nil, environment: [String: String]? = nil)
    throws(ImageBuildError) -> String
{
    String(decoding: try runToolData(argv, in: directory, environment: environment), as: UTF8.self)
}

/// Runs a tool to completion; stdout is returned as bytes.
public func runToolData(_ argv: [String], in directory: String? = nil, environment: [String: String]? = nil)
    throws(ImageBuildError) -> Data
{
    do {
        return try runCapturing(argv, in: directory, environment: environment)
    } catch {
        throw .commandFailed(error.description)
    }
}
