import AgentProtocol
import Foundation
import Testing

/// VM definitions (issue #14): define, up NAME with an override, list, undefine;
/// bad definitions are refused naming the key. One real boot.
@Suite(.serialized, .timeLimit(.minutes(30))) struct DefinitionTests {
    @Test func defineUpListUndefineRoundTrip() throws {
        let configDir = try TestEnvironment.temporaryDirectory("defs")
        let env = ["HOSTVMM_CONFIG_DIR": configDir]
        func hostvmm(_ args: [String]) throws -> (status: Int32?, output: String) {
            try runCommand(TestEnvironment.hostvmm, args, environment: env)
        }
        let defined = try hostvmm(["define", "defvm", "--memory", "384M", "--no-display", "--audio", "none",
                                   "--forward", "tcp:18222:22"])
        #expect(defined.status == 0, "\(defined.output)")
        let file = try String(contentsOfFile: "\(configDir)/defvm.json", encoding: .utf8)
        #expect(file.contains("\"memory\": \"384M\"") && file.contains("\"display\": false"), "\(file)")
        #expect(try hostvmm(["define", "defvm", "--cpus", "1"]).output.contains("already defined"))
        let unknown = try hostvmm(["define", "other", "--colour", "red"])
        #expect(unknown.status != 0 && unknown.output.contains("--colour"), "\(unknown.output)")
        try Data(#"{"name": "broken", "options": {"memory": "1G", "inputs": "yes"}}"#.utf8)
            .write(to: URL(fileURLWithPath: "\(configDir)/broken.json"))
        let broken = try hostvmm(["up", "broken"])
        #expect(broken.status != 0 && broken.output.contains("'inputs' must be true or false"), "\(broken.output)")

        // up NAME: the definition, with --cpus 1 from the command line on top.
        let vm = try BootedVM(name: "defvm", extraEnvironment: env, arguments: ["up", "defvm", "--cpus", "1"])
        #expect(vm.up.count(containing: "forwarding tcp 127.0.0.1:18222 -> guest 22") == 1, "\(vm.up.transcript)")
        let status = try vm.status()
        #expect(status["memory-bytes"]?.int64Value == 384 << 20 && status["cpus"]?.int64Value == 1,
                "status: \(JSONWriter.string(status))")
        #expect(try vm.cli(["display", vm.name]).output.contains("\"enabled\": false"))

        let list = try vm.cli(["list", "--json"])
        let entries = list.output.split(separator: "\n").compactMap { try? JSONParser.parse(String($0)) }
        let entry = entries.first { $0["name"]?.stringValue == "defvm" }
        #expect(entry?["defined"] == .bool(true) && entry?["state"]?.stringValue == "running"
                    && entry?["memory-bytes"]?.int64Value == 384 << 20 && entry?["agent-ready"] == .bool(true)
                    && (entry?["spice"]?.stringValue ?? "").hasPrefix("spice://"),
                "list: \(list.output)")
        #expect(entries.contains { $0["name"]?.stringValue == "broken" && $0["state"]?.stringValue == "stopped" })

        #expect(try vm.cli(["undefine", "defvm"]).status == 0)
        let after = try vm.cli(["list", "--json"]).output
        #expect(after.contains(#""name": "defvm", "defined": false, "state": "running""#), "list: \(after)")
    }
}
