import Foundation
import GuestImage
import LinuxSystem

/// Where QEMU is and whether it is new enough (QEMU 10 from bookworm-backports:
/// architecture.md §1). Errors name the package and how to install it.
public struct QEMUBinary: Sendable {
    public static let minimumMajor = 10
    public static let installHint =
        "install it with scripts/setup.sh, or: apt-get install -t bookworm-backports qemu-system-x86"

    public var path: String
    public var version: (major: Int, minor: Int, micro: Int)

    public enum LocateError: Error, CustomStringConvertible {
        case notFound(String)
        case unrunnable(String, String)
        case tooOld(String, String)

        public var description: String {
            switch self {
            case .notFound(let p):
                return "QEMU not found (\(p)): the Debian package qemu-system-x86 (version 10, bookworm-backports) is needed; \(QEMUBinary.installHint)"
            case .unrunnable(let p, let why):
                return "QEMU at \(p) could not report its version (\(why)); reinstall qemu-system-x86: \(QEMUBinary.installHint)"
            case .tooOld(let p, let v):
                return "QEMU at \(p) is version \(v); hostvmm needs \(QEMUBinary.minimumMajor) or newer from the Debian package qemu-system-x86 in bookworm-backports; \(QEMUBinary.installHint)"
            }
        }
    }

    /// Finds `qemu-system-x86_64` (or `explicitPath`) and checks `--version`.
    public static func locate(explicitPath: String? = nil) throws(LocateError) -> QEMUBinary {
        let name = explicitPath ?? "qemu-system-x86_64"
        let path = Subprocess.resolve(name, environment: Subprocess.currentEnvironment())
        guard FileManager.default.isExecutableFile(atPath: path) else { throw .notFound(name) }
        let output: String
        do {
            output = String(decoding: try runCapturing([path, "--version"]), as: UTF8.self)
        } catch {
            throw .unrunnable(path, "\(error)")
        }
        guard let version = parseVersion(output) else {
            throw .unrunnable(path, "unrecognised output: \(output.prefix(100))")
        }
        guard version.major >= minimumMajor else {
            throw .tooOld(path, "\(version.major).\(version.minor).\(version.micro)")
        }
        return QEMUBinary(path: path, version: version)
    }

    /// Whether QEMU can load its D-Bus display (`ui-dbus.so`, Debian package
    /// qemu-system-modules-opengl), which `--display` uses to pass a client's
    /// window size to the guest (QEMUDisplayConsole). `-display help` lists the
    /// display modules QEMU finds.
    public func hasDBusDisplay() -> Bool {
        guard let output = try? runCapturing([path, "-display", "help"]) else { return false }
        return String(decoding: output, as: UTF8.self).split(separator: "\n").contains { $0 == "dbus" }
    }

    public static let dbusDisplayPackage = "qemu-system-modules-opengl"

    /// Parses "QEMU emulator version 10.0.2 (Debian ...)".
    public static func parseVersion(_ text: String) -> (major: Int, minor: Int, micro: Int)? {
        guard let range = text.range(of: "version ") else { return nil }
        let numbers = text[range.upperBound...].prefix { $0.isNumber || $0 == "." }.split(separator: ".").compactMap {
            Int($0)
        }
        guard numbers.count >= 2 else { return nil }
        return (numbers[0], numbers[1], numbers.count > 2 ? numbers[2] : 0)
    }
}
