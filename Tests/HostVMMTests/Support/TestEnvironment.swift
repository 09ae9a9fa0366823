import TestSupport
import Foundation

/// Paths the tests need: the package root and the binaries `swift build` made.
enum TestEnvironment {
    static let packageRoot: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<4 { url.deleteLastPathComponent() }  // Support/, HostVMMTests/, Tests/
        return url.path
    }()

    /// Directory holding `hostvmm` and `guest-agent` (HOSTVMM_BIN_DIR overrides).
    static let binDir: String = {
        if let d = ProcessInfo.processInfo.environment["HOSTVMM_BIN_DIR"], !d.isEmpty { return d }
        return "\(packageRoot)/.build/debug"
    }()

    static var hostvmm: String { "\(binDir)/hostvmm" }
    /// The spice-gtk client for display and input tests (run with /usr/bin/python3).
    static let spiceDevicesClient = "\(packageRoot)/Tests/HostVMMTests/Clients/spice_devices.py"
    static let spiceAudioClient = "\(packageRoot)/Tests/HostVMMTests/Clients/spice_audio.py"
    static let toneAnalysis = "\(packageRoot)/Tests/HostVMMTests/Clients/tone.py"
    static var guestAgent: String { "\(binDir)/guest-agent" }

    /// A fresh private directory under /tmp, removed by the caller.
    static func temporaryDirectory(_ label: String) throws -> String {
        try temporaryTestDirectory(label)
    }
}
