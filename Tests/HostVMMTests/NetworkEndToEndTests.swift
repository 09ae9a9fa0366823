import AgentProtocol
import Foundation
import HostVMM
import SpiceBridge
import TestSupport
import Testing

/// The embedded guest as a person's machine (issue #14, first part): a NIC on QEMU's
/// user network (DHCP, the host reachable, a --forward into the guest), entropy
/// from the host, and a shell on tty1 that a real SPICE client types into.
@Suite(.serialized, .timeLimit(.minutes(30))) struct NetworkEndToEndTests {
    @Test func theGuestHasANetworkEntropyAndAConsoleShell() throws {
        let forwardPort = try #require(SpiceServer.freePort(address: "127.0.0.1", from: 18080))
        let vm = try BootedVM(name: "e2e-net", options: ["--forward", "tcp:\(forwardPort):8080"])
        #expect(vm.up.count(containing: "network: user mode") == 1, "\(vm.up.transcript)")

        // DHCP from QEMU's user network, on a MAC derived from the name.
        let lease = try vm.guestRun("for i in $(seq 1 100); do ip -4 addr show eth0 | grep -q 10.0.2.15 && break; sleep 0.1; done; ip -4 addr show eth0; cat /sys/class/net/eth0/address")
        #expect(lease.output.contains("inet 10.0.2.15/24"), "guest: \(lease.output)")
        #expect(lease.output.contains(NetworkSetup.mac(forVM: vm.name)), "guest: \(lease.output)")
        let interfaces = try vm.agent(#"{"execute":"guest-network-get-interfaces"}"#)
        #expect(JSONWriter.string(interfaces).contains("10.0.2.15"), "\(JSONWriter.string(interfaces))")

        // The guest fetches from an HTTP server on the host (the gateway 10.0.2.2).
        let site = try TestEnvironment.temporaryDirectory("net")
        try Data("served by the host\n".utf8).write(to: URL(fileURLWithPath: "\(site)/hello.txt"))
        let httpPort = try #require(SpiceServer.freePort(address: "127.0.0.1", from: 18180))
        let server = try WatchedProcess("/usr/bin/python3", ["-m", "http.server", "--bind", "127.0.0.1", "--directory", site,
                                                             String(httpPort)])
        defer { server.signal(SIGKILL); _ = server.waitForExit(timeout: 10) }
        #expect(server.waitForLine(containing: "Serving HTTP", timeout: 30) != nil, "\(server.transcript)")
        let fetched = try vm.guestRun("wget -q -O - http://10.0.2.2:\(httpPort)/hello.txt 2>&1")
        #expect(fetched.output.contains("served by the host"), "wget: \(fetched.output)")

        // --forward: the host's loopback reaches a server in the guest.
        let started = try vm.guestRun("mkdir -p /www && echo served by the guest > /www/index.html && httpd -p 8080 -h /www && echo ok")
        #expect(started.output.contains("ok"), "\(started.output)")
        var page = ""
        _ = try waitUntil(timeout: 30, interval: 0.2) {
            page = try runCommand("/usr/bin/python3", ["-c", "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())",
                                                       "http://127.0.0.1:\(forwardPort)/index.html"], timeout: 30).output
            return page.contains("served by the guest")
        }
        let listening = try vm.guestRun("ps; netstat -ltn 2>&1").output
        #expect(page.contains("served by the guest"), "through --forward: '\(page)'; guest: \(listening)")

        // Entropy comes from the host.
        let rng = try vm.guestRun("cat /sys/class/misc/hw_random/rng_current")
        #expect(rng.output.hasPrefix("virtio_rng"), "rng: \(rng.output)")

        // tty1 has a shell: a command a SPICE client types runs, and its output is on the screen.
        let uri = try vm.cli(["spice", vm.name]).output.trimmingCharacters(in: .whitespacesAndNewlines)
        let typed = try runCommand("/usr/bin/python3", [TestEnvironment.spiceDevicesClient, uri, "type",
                                                        "echo hello.from.tty1 \n"], timeout: 60)
        #expect(typed.output.contains("typed"), "client: \(typed.output)")
        let screen = try vm.guestRun("for i in $(seq 1 100); do [ $(grep -o hello.from.tty1 /dev/vcs1 | wc -l) -ge 2 ] && break; sleep 0.1; done; grep -o hello.from.tty1 /dev/vcs1 | wc -l")
        let text = try vm.guestRun("cat /dev/vcs1 | tr -s ' '").output
        #expect(screen.output.trimmingCharacters(in: .whitespacesAndNewlines) == "2",
                "tty1 should show the command and its output: \(text)")
    }
}
