import Foundation
import LinuxSystem
import SpiceBridge
import TestSupport

/// One in-process SpiceServer at a time: libspice-server's core and its
/// worker threads are per process, so suites that run a server in the test
/// process (SpiceDisplayTests, X11ClipboardTests, HostileGuestStreamTests,
/// SpiceVDAgentTests) take turns.
enum InProcessSpice {
    static let gate = DispatchSemaphore(value: 1)

    /// Takes the gate and starts the loop the server will run on; the caller gives the
    /// gate back (`gate.signal()`) when its server is gone.
    static func acquireLoop() throws -> LoopThread {
        gate.wait()
        do {
            return try LoopThread()
        } catch {
            gate.signal()
            throw error
        }
    }
}

/// A SpiceServer in the test process (the bridge exactly as hostvmm runs it) on a free
/// loopback port with a ticket, and a UNIX socket standing for the guest's
/// com.redhat.spice.0: each connection to `agentSocket` is attached as the guest
/// (re)opening the port. Holds InProcessSpice.gate until `stop`. Unchecked Sendable: the
/// server, listener and count are touched on the loop's thread only (or through loop.sync).
final class SpiceWithAgentPort: @unchecked Sendable {
    let loop: LoopThread
    let uri: String
    let agentSocket: String
    private var server: SpiceServer?
    private var listener: Int32 = -1
    private var attached = 0

    init(name: String, agentSocket: String, firstPort: Int) throws {
        loop = try InProcessSpice.acquireLoop()
        self.agentSocket = agentSocket
        guard let port = SpiceServer.freePort(address: "127.0.0.1", from: firstPort) else {
            loop.stop()
            InProcessSpice.gate.signal()
            throw TestFailure("no free port from \(firstPort)")
        }
        let ticket = "\(name)-\(UInt32.random(in: 0...UInt32.max))"
        uri = "spice://127.0.0.1?port=\(port)&password=\(ticket)"
        let made: Bool? = loop.onLoop(timeout: 10) { [self] finish in
            do {
                let s = try SpiceServer(config: SpiceConfig(listen: .tcp(address: "127.0.0.1", port: port),
                                                            access: .ticket(ticket), name: name), loop: loop.loop)
                s.setRunning(true)
                server = s
                listener = try UnixSocket.listen(path: agentSocket)
                _ = try loop.loop.watch(fd: listener, events: .read) { [self] _ in
                    guard let fd = try? UnixSocket.accept(listener) else { return }
                    server?.attachAgent(fd: fd, loop: loop.loop)
                    attached += 1
                }
                finish(true)
            } catch {
                finish(false)
            }
        }
        guard made == true else {
            stop()
            throw TestFailure("the in-process SPICE server did not start")
        }
    }

    /// Waits (bounded) until `count` connections to the agent socket have been attached.
    func waitForAttachments(_ count: Int, timeout: TimeInterval) -> Bool {
        waitUntil(timeout: timeout) { loop.sync { self.attached } >= count }
    }

    private var stopped = false

    func stop() {
        guard !stopped else { return }
        stopped = true
        loop.sync { [self] in
            server?.detachAgent()
            server = nil
            if listener >= 0 { close(listener) }
        }
        loop.stop()
        InProcessSpice.gate.signal()
    }

    deinit { stop() }
}
