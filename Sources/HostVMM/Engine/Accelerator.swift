#if canImport(Glibc)
import Glibc
#endif

/// Which CPU engine QEMU runs the guest on, and why (architecture.md §1).
public struct AcceleratorChoice: Sendable, Equatable {
    public enum Kind: String, Sendable {
        case kvm
        case tcg
    }

    public var kind: Kind
    public var reason: String

    /// KVM only where the host has hardware virtualization: the kvm_intel or
    /// kvm_amd module and a usable /dev/kvm. `kvm_pvm` (these machines) also
    /// provides /dev/kvm, but it emulates a stock kernel instruction by
    /// instruction and QEMU fails on it, so it counts as no KVM.
    public static func detect(sysModule: String = "/sys/module", devKVM: String = "/dev/kvm") -> AcceleratorChoice {
        func loaded(_ module: String) -> Bool { access("\(sysModule)/\(module)", F_OK) == 0 }
        let hasDevice = access(devKVM, R_OK | W_OK) == 0
        for module in ["kvm_intel", "kvm_amd"] where loaded(module) {
            if hasDevice {
                return AcceleratorChoice(kind: .kvm, reason: "\(module) is loaded and \(devKVM) is usable")
            }
            return AcceleratorChoice(kind: .tcg, reason: "\(module) is loaded but \(devKVM) is not accessible")
        }
        if loaded("kvm_pvm") {
            return AcceleratorChoice(
                kind: .tcg,
                reason: "\(devKVM) is kvm_pvm, which cannot run a stock Linux guest; using software emulation (TCG)")
        }
        if hasDevice {
            return AcceleratorChoice(kind: .tcg, reason: "\(devKVM) exists but neither kvm_intel nor kvm_amd is loaded")
        }
        return AcceleratorChoice(kind: .tcg, reason: "no hardware virtualization (\(devKVM) absent)")
    }

    /// An explicit `--accel`: honoured, but KVM is checked so it fails clearly instead of hanging.
    public static func forced(_ kind: Kind) -> AcceleratorChoice {
        AcceleratorChoice(kind: kind, reason: "requested with --accel \(kind.rawValue)")
    }
}
