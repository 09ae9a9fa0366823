import TestSupport
import AgentProtocol
import Foundation
import LinuxSystem
import Testing
@testable import HostVMM

/// The host's agent client against the real guest-agent process, and against
/// the faults a real agent does not produce on demand (a hung agent, a stream
/// of garbage and stale replies): those peers are scripted stand-ins.
@Suite struct AgentClientTests {
    private func socketPair() -> (Int32, Int32) {
        var fds: [Int32] = [0, 0]
        precondition(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0)
        return (fds[0], fds[1])
    }

    private func ping(_ t: LoopThread, _ client: AgentClient, timeoutMs: UInt64 = 2000)
        -> Result<JSONValue?, AgentError>?
    {
        t.onLoop(timeout: 30) { finish in
            client.send(QGARequest(execute: "guest-ping"), timeoutMs: timeoutMs) { finish($0) }
        }
    }

    @Test func syncsAndPingsTheRealAgentAndSurvivesItsRestart() throws {
        let t = try LoopThread()
        defer { t.stop() }
        var agent = try AgentProcess()
        defer { agent.stop() }
        let client = AgentClient(loop: t.loop, syncTimeoutMs: 1000)
        let readyCount = ResultBox<Int>()
        nonisolated(unsafe) var readies = 0
        t.sync {
            client.onReady = {
                readies += 1
                if readies == 2 { readyCount.set(readies) }
            }
            try! client.attach(fd: try! UnixSocket.connect(path: agent.socketPath))
            client.guestPort(open: true)
        }
        guard case .success(let value)? = ping(t, client) else {
            Issue.record("ping failed")
            return
        }
        #expect(value == .object([:]))

        // The agent restarts: the channel drops, a new one comes up, the client resyncs.
        agent.stop()
        agent = try AgentProcess()
        let path = agent.socketPath
        t.sync { try! client.attach(fd: try! UnixSocket.connect(path: path)) }
        #expect(readyCount.wait(timeout: 20) == 2)
        guard case .success? = ping(t, client) else {
            Issue.record("ping after restart failed")
            return
        }
        t.sync { withExtendedLifetime(client) {} }
    }

    @Test func pingFailsFastWhenTheGuestHasNoAgent() throws {
        let t = try LoopThread()
        defer { t.stop() }
        let (ours, theirs) = socketPair()
        defer { close(theirs) }
        let client = AgentClient(loop: t.loop)
        t.sync { try! client.attach(fd: ours) }  // chardev connected, guest port closed
        let result = ping(t, client)
        #expect(result == .failure(.notConnected))
        t.sync { withExtendedLifetime(client) {} }
    }

    @Test func hungAgentTimesOutWithinItsBound() throws {
        let t = try LoopThread()
        defer { t.stop() }
        let (ours, theirs) = socketPair()
        defer { close(theirs) }
        let client = AgentClient(loop: t.loop, syncTimeoutMs: 500)
        t.sync {
            try! client.attach(fd: ours)
            client.guestPort(open: true)
        }
        let start = Date()
        let result = ping(t, client, timeoutMs: 500)
        let elapsed = Date().timeIntervalSince(start)
        guard case .failure(.timeout)? = result else {
            Issue.record("expected a timeout, got \(String(describing: result))")
            return
        }
        #expect(elapsed < 5, "a hung agent must fail within its bound, took \(elapsed) s")
        #expect(AgentError.timeout(milliseconds: 500).description.contains("did not answer"))
        t.sync { withExtendedLifetime(client) {} }
    }

    /// Stand-in agent: answers the sync only after garbage, a stray 0xFF and a
    /// stale sync reply, then answers one command.
    @Test func resyncsThroughGarbageAndStaleReplies() throws {
        let t = try LoopThread()
        defer { t.stop() }
        let (ours, theirs) = socketPair()
        let client = AgentClient(loop: t.loop, syncTimeoutMs: 5000)
        let peerDone = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            defer { close(theirs); peerDone.signal() }
            var framer = QGAInputFramer()
            var answeredSync = false
            while true {
                guard case .data(let bytes) = Syscall.readSome(fd: theirs) else { return }
                for case .value(let v) in framer.feed(bytes) {
                    guard let req = try? QGARequest.decode(v).get() else { continue }
                    if req.execute == "guest-sync-delimited", !answeredSync, let id = req.arguments["id"] {
                        answeredSync = true
                        var out = Array("garbage\n{\"return\":".utf8) + [0xFF] + Array("{\"return\":1}\n".utf8)
                        out += QGAReply.success(id, id: nil).encode(delimited: true)
                        _ = Syscall.writeAll(fd: theirs, out)
                    } else if req.execute == "guest-ping" {
                        _ = Syscall.writeAll(fd: theirs, Array("{\"return\":{}}\n".utf8))
                        return
                    }
                }
            }
        }
        t.sync {
            try! client.attach(fd: ours)
            client.guestPort(open: true)
        }
        let result = ping(t, client)
        #expect(result == .success(.object([:])))
        #expect(peerDone.wait(timeout: .now() + 10) == .success)
        t.sync { withExtendedLifetime(client) {} }
    }
}
