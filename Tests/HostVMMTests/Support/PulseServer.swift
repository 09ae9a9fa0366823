import Foundation
import TestSupport

/// A private PulseAudio server for the audio tests: root may run one in the
/// foreground (no systemd, no D-Bus), with a null sink whose monitor the test
/// records, an 880 Hz sine source as the default source (the host's
/// "microphone"), and a native socket of its own that hostvmm is pointed at.
final class PulseServer {
    static let binary = "/usr/bin/pulseaudio"
    static let sink = "hostvmm_test_out"
    static let source = "hostvmm_test_sine"
    static let sourceHz = 880
    let directory: String
    private(set) var process: WatchedProcess
    var address: String { "unix:\(directory)/native" }
    private var environment: [String: String] { ["PULSE_SERVER": address, "HOME": directory, "XDG_RUNTIME_DIR": directory] }

    init() throws {
        directory = try temporaryTestDirectory("pulse")
        process = try Self.launch(directory)
        try waitUntilReady()
    }

    private static func launch(_ directory: String) throws -> WatchedProcess {
        try WatchedProcess(binary, [
            "--daemonize=no", "--exit-idle-time=-1", "--use-pid-file=no", "-n", "--log-target=stderr",
            "--load=module-null-sink sink_name=\(sink) rate=48000 channels=2",
            "--load=module-sine-source source_name=\(source) rate=48000 frequency=\(sourceHz)",
            "--load=module-native-protocol-unix socket=\(directory)/native auth-anonymous=1",
        ], environment: ["HOME": directory, "XDG_RUNTIME_DIR": directory])
    }

    /// Polls `pactl info` (the server announces nothing on a pipe we could wait for).
    private func waitUntilReady() throws {
        let ready = try waitUntil(timeout: 30, interval: 0.1) {
            try runCommand("/usr/bin/pactl", ["info"], environment: environment, timeout: 10).status == 0
        }
        guard ready else { throw TestFailure("PulseAudio did not answer within 30 s:\n\(process.transcript)") }
        let set = try runCommand("/usr/bin/pactl", ["set-default-source", Self.source], environment: environment)
        guard set.status == 0 else { throw TestFailure("pactl set-default-source: \(set.output)") }
    }

    /// Records the null sink's monitor (what hostvmm played) as raw S16LE 48 kHz stereo into `file`.
    /// A short latency: parec killed by a signal loses what it buffered.
    func recordSink(into file: String) throws -> WatchedProcess {
        try WatchedProcess("/bin/sh", ["-c", "exec /usr/bin/parec -d \(Self.sink).monitor --format=s16le --rate=48000 "
                                          + "--channels=2 --raw --latency-msec=20 > '\(file)'"], environment: environment)
    }

    func kill() {
        process.signal(SIGKILL)
        _ = process.waitForExit(timeout: 10)
    }

    /// A new server on the same socket, after `kill`.
    func restart() throws {
        process = try Self.launch(directory)
        try waitUntilReady()
    }

    deinit {
        process.signal(SIGTERM)
        _ = process.waitForExit(timeout: 5)
        try? FileManager.default.removeItem(atPath: directory)
    }
}
