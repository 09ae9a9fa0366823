/// `--audio` (issue #12): where the guest's virtio-snd sound goes.
///
/// `auto` (the default) is SPICE (when the VM has a SPICE server) plus the
/// host's PulseAudio when a server answers at start-up; `up` says which it
/// chose. `pulse` and `spice+pulse` ask for PulseAudio outright: a missing
/// server is then reported as such, and the VM still runs. `none` gives the
/// guest no sound device.
public struct AudioSetup: Sendable, Equatable {
    public enum Pulse: String, Sendable { case off, on, ifReachable = "if-reachable" }

    /// A virtio-snd device at all.
    public var device = true
    public var spice = true
    public var pulse = Pulse.ifReachable
    /// PulseAudio server (libpulse's syntax, e.g. unix:/run/pulse/native); nil: libpulse's default (PULSE_SERVER).
    public var pulseServer: String?

    public init() {}

    public static let modes = ["auto", "spice", "pulse", "spice+pulse", "none"]

    public static func parse(_ mode: String) throws(VMConfigError) -> AudioSetup {
        var setup = AudioSetup()
        switch mode {
        case "auto": break
        case "spice": setup.pulse = .off
        case "pulse": (setup.spice, setup.pulse) = (false, .on)
        case "spice+pulse", "pulse+spice": setup.pulse = .on
        case "none": (setup.device, setup.spice, setup.pulse) = (false, false, .off)
        default: throw .outOfRange("--audio must be one of \(modes.joined(separator: ", "))")
        }
        return setup
    }
}
