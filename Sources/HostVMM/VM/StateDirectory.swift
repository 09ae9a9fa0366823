import Foundation

/// The per-VM state directory (architecture.md §4): sockets, logs and, later,
/// crash bundles. `$XDG_RUNTIME_DIR/hostvmm/NAME`, else `/run/hostvmm/NAME`
/// (root) or `/tmp/hostvmm-UID/NAME`. Mode 0700; files in it 0600.
public struct StateDirectory: Sendable {
    public let path: String

    public init(path: String) { self.path = path }

    public static func root(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        if let explicit = environment["HOSTVMM_STATE_DIR"], !explicit.isEmpty { return explicit }
        if let xdg = environment["XDG_RUNTIME_DIR"], !xdg.isEmpty { return "\(xdg)/hostvmm" }
        if getuid() == 0 { return "/run/hostvmm" }
        return "/tmp/hostvmm-\(getuid())"
    }

    public static func forVM(_ name: String) -> StateDirectory {
        StateDirectory(path: "\(root())/\(name)")
    }

    public var controlSocket: String { "\(path)/control.sock" }
    public var qmpSocket: String { "\(path)/qmp.sock" }
    public var agentSocket: String { "\(path)/qga.sock" }
    public var spiceAgentSocket: String { "\(path)/vdagent.sock" }
    /// The vhost-user socket of an input device ("keyboard", "tablet"); hostvmm listens, QEMU connects.
    public func inputSocket(_ device: String) -> String { "\(path)/input-\(device).sock" }
    /// The vhost-user socket of the virtio-gpu (--display); hostvmm listens, QEMU connects.
    public var gpuSocket: String { "\(path)/gpu.sock" }
    /// The vhost-user socket of the virtio-snd (--audio); hostvmm listens, QEMU connects.
    public var soundSocket: String { "\(path)/sound.sock" }
    /// QEMU listens on these (the usb-redir chardevs): SPICE usbredir channel N, host device slot N.
    public func usbRedirSocket(_ channel: Int) -> String { "\(path)/usbredir\(channel).sock" }
    public func usbHostSocket(_ slot: Int) -> String { "\(path)/usbhost\(slot).sock" }
    /// --snapshot's overlay of the person's disk `index` (deleted when QEMU exits).
    public func diskSnapshot(_ index: Int) -> String { "\(path)/disk\(index + 1)-snapshot.qcow2" }
    /// UEFI variables of a VM that has no definition (gone with the state directory).
    public var uefiVars: String { "\(path)/OVMF_VARS.fd" }
    public var consoleLog: String { "\(path)/console.log" }
    public var qemuLog: String { "\(path)/qemu.log" }
    public var hostvmmLog: String { "\(path)/hostvmm.log" }
    /// The VM's copy-on-write overlay of its root disk (DiskOverlay).
    public var diskOverlay: String { "\(path)/disk.qcow2" }

    /// Creates the directory (and the root) with mode 0700, tightening an existing one.
    public func create() throws {
        let fm = FileManager.default
        let root = (path as NSString).deletingLastPathComponent
        for dir in [root, path] {
            if !fm.fileExists(atPath: dir) {
                try fm.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            }
            guard chmod(dir, 0o700) == 0 else {
                throw CocoaError(.fileWriteNoPermission, userInfo: [NSFilePathErrorKey: dir])
            }
        }
    }

    /// Creates (truncating) a log file readable by the owner only.
    public func openLog(_ file: String) throws -> Int32 {
        let fd = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_APPEND, 0o600)
        guard fd >= 0 else { throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: file]) }
        return fd
    }
}
