import CLinuxSupport
import CSpiceServer

/// Which libspice-server this process loaded. hostvmm prefers the build that
/// scripts/build-spice-server.sh makes from Debian's source with one fix (a
/// client that leaves while its display channel starts makes Debian's build
/// free that channel's state while its worker still uses it, and the process
/// dies); the run path in Package.swift names its directory first.
public struct SpiceLibrary: Sendable {
    /// Where build-spice-server.sh installs the fixed build (also in Package.swift).
    public static let fixedBuildDirectory = "/usr/local/lib/hostvmm"

    /// The shared object's path as the loader opened it.
    public let path: String

    /// True for build-spice-server.sh's build.
    public var isFixedBuild: Bool { path.hasPrefix(Self.fixedBuildDirectory + "/") }

    /// The library that holds `spice_server_new` in this process.
    public static let loaded: SpiceLibrary = {
        let function: @convention(c) () -> OpaquePointer? = spice_server_new
        guard let name = clinux_shared_object_path(unsafeBitCast(function, to: UnsafeRawPointer.self)) else {
            return SpiceLibrary(path: "unknown")
        }
        return SpiceLibrary(path: String(cString: name))
    }()
}
