import AgentProtocol
import Foundation
import Testing

/// The SPICE server embedded in hostvmm, with real clients: spice-gtk's
/// GObject API from Debian's python3, and spicy-stats.
@Suite(.serialized, .timeLimit(.minutes(30))) struct SpiceEndToEndTests {
    static let client = "\(TestEnvironment.packageRoot)/Tests/HostVMMTests/Clients/spice_session.py"

    private func session(_ uri: String) throws -> (status: Int32?, output: String) {
        try runCommand("/usr/bin/python3", [Self.client, uri, "connect"], timeout: 60)
    }

    @Test func ticketIsRequiredAndTheURIWorks() throws {
        let vm = try BootedVM(name: "e2e-spice")
        let uriOut = try vm.cli(["spice", vm.name])
        #expect(uriOut.status == 0)
        let uri = uriOut.output.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(uri.hasPrefix("spice://127.0.0.1?port="))
        #expect(uri.contains("&password="))

        let info = try JSONParser.parse(try vm.cli(["spice", vm.name, "--json"]).output)
        #expect(info["ticket"] == .bool(true))
        let passwordFile = try #require(info["password-file"]?.stringValue)
        let attributes = try FileManager.default.attributesOfItem(atPath: passwordFile)
        #expect((attributes[.posixPermissions] as? Int) == 0o600)

        let good = try session(uri)
        #expect(good.status == 0, "\(good.output)")
        #expect(good.output.contains("opened"))
        let wrong = uri.replacingOccurrences(of: #"password=[A-Za-z0-9]+"#, with: "password=wrong", options: .regularExpression)
        let bad = try session(wrong)
        #expect(bad.status == 1)
        #expect(bad.output.contains("auth-failed"), "\(bad.output)")
        #expect(vm.waitForOccurrence("spice-client-connected", count: 1, timeout: 10))
        #expect(vm.waitForOccurrence("spice-client-disconnected", count: 1, timeout: 10))

        // spicy-stats reads the main channel with the ticket.
        let port = try #require(info["port"]?.int64Value)
        let password = try String(contentsOfFile: passwordFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        let stats = try runCommand("/usr/bin/timeout", ["-s", "INT", "4", "spicy-stats", "-h", "127.0.0.1", "-p", "\(port)", "-w", password])
        let mainLine = stats.output.split(separator: "\n").first { $0.hasPrefix("main:") }
        let bytes = mainLine.flatMap { Int($0.split(separator: " ").last ?? "") } ?? 0
        #expect(bytes > 1000, "spicy-stats: \(stats.output)")

        _ = try vm.cli(["down", vm.name])
        #expect(vm.upExitCode() == 0)
    }

    @Test func insecureAndUnixSocketAndNoSpice() throws {
        let dir = try TestEnvironment.temporaryDirectory("spice-unix")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        do {  // one VM at a time: this one must be gone before the next boots
            let vm = try BootedVM(name: "e2e-spice-unix", options: ["--spice", "unix:\(dir)/spice.sock", "--spice-insecure"])
            let uri = try vm.cli(["spice", vm.name]).output.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(uri == "spice+unix://\(dir)/spice.sock")
            let r = try session(uri)
            #expect(r.status == 0, "\(r.output)")
            _ = try vm.cli(["down", vm.name])
            #expect(vm.upExitCode() == 0)
        }

        let none = try BootedVM(name: "e2e-nospice", options: ["--no-spice"])
        let s = try none.cli(["spice", none.name])
        #expect(s.status == 1)
        #expect(s.output.contains("without SPICE"))
        _ = try none.cli(["down", none.name])
        #expect(none.upExitCode() == 0)
    }
}
