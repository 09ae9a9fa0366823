import CLinuxSupport
import Foundation
import Glibc
import LinuxSystem
import Testing
import TestSupport
@testable import VirtioCore
@testable import VirtioInput

/// VhostUserBackend from the frontend's side, in process: the test speaks the
/// vhost-user protocol as QEMU does (features, memory table from a memfd,
/// vring setup with eventfds, config space), drives a real device (the virtio
/// keyboard) through a ring it lays out itself, and then does what QEMU only
/// does when it dies or restarts: it goes away, comes back on a new
/// connection, and sends nonsense. QEMU's own side is covered by the VM tests
/// (InputEndToEndTests, DisplayEndToEndTests); these cases cannot be made with it.
/// The limit covers waiting for a test thread: in the full suite, VM tests that block
/// their threads (the one-VM slot, waits for guests) can hold both of a 2-core machine's
/// for 12 minutes before these start (measured); each case itself takes seconds.
@Suite(.timeLimit(.minutes(30))) struct VhostUserFrontendTests {
    /// The real keyboard behind a backend listening on a fresh socket, on its own loop.
    final class Harness: @unchecked Sendable {
        let runner: LoopThread
        let keyboard = VirtioInputDevice(flavour: .keyboard)
        let backend: VhostUserBackend
        let path: String
        private var lines: [String] = []

        init() throws {
            // hostvmm ignores SIGPIPE (VMRunner); so must this process: the frontend
            // writes to connections the backend drops.
            signal(SIGPIPE, SIG_IGN)
            runner = try LoopThread()
            path = "\(try temporaryTestDirectory("vhost-user"))/keyboard.sock"
            let (runner, keyboard, path) = (runner, keyboard, path)
            backend = runner.sync {
                let b = VhostUserBackend(name: "keyboard", device: keyboard, loop: runner.loop)
                try! b.listen(path: path)
                return b
            }
            runner.sync { [self] in backend.onLog = { self.lines.append($0) } }
        }

        /// The backend's log lines so far (read on its loop).
        var log: [String] { runner.sync { [self] in lines } }

        func stop() {
            runner.sync { [backend] in backend.close() }
            runner.stop()
        }
    }

    /// The frontend: one connection to the backend's socket, blocking, bounded by poll.
    final class Frontend {
        let fd: Int32

        init(path: String) throws {
            fd = try UnixSocket.connect(path: path)
        }

        deinit { close(fd) }

        func send(_ request: VhostUserRequest, _ payload: [UInt8] = [], fds: [Int32] = [], flags: UInt32 = 0) {
            let bytes = VhostUserHeader(request: request.rawValue, flags: VhostUserHeader.version | flags,
                                        size: UInt32(payload.count)).encoded() + payload
            var fds = fds
            let n = bytes.withUnsafeBytes { clinux_send_with_fds(fd, $0.baseAddress, $0.count, &fds, Int32(fds.count)) }
            precondition(n == bytes.count, "short send")
        }

        func sendRaw(_ bytes: [UInt8]) { _ = Syscall.writeAll(fd: fd, bytes) }

        func read(_ count: Int) throws -> [UInt8] {
            var out: [UInt8] = []
            while out.count < count {
                var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                guard poll(&pfd, 1, 5000) == 1 else { throw TestFailure("no reply within 5 s") }
                var buffer = [UInt8](repeating: 0, count: count - out.count)
                let n = Glibc.read(fd, &buffer, buffer.count)
                guard n > 0 else { throw TestFailure("the backend closed the connection") }
                out += buffer[..<n]
            }
            return out
        }

        /// A request that has a reply; returns the reply's payload.
        func ask(_ request: VhostUserRequest, _ payload: [UInt8] = []) throws -> [UInt8] {
            send(request, payload)
            let header = try VhostUserHeader.decode(try read(VhostUserHeader.size))
            #expect(header.request == request.rawValue && header.flags & VhostUserHeader.replyFlag != 0)
            return try read(Int(header.size))
        }

        /// Whether the backend closed this connection within 5 s.
        func closedByBackend() -> Bool {
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&pfd, 1, 5000) == 1 else { return false }
            var byte: UInt8 = 0
            return Glibc.read(fd, &byte, 1) == 0
        }
    }


    static func u64(_ bytes: [UInt8]) -> UInt64 {
        bytes.prefix(8).enumerated().reduce(0) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
    }

    /// The user (frontend process) address of a guest address in region 0.
    static func user(_ gpa: UInt64) -> UInt64 { TestGuest.regions[0].userAddress + gpa }

    /// QEMU's setup sequence for the keyboard's event queue (8 entries) with the ring at TestRing's place.
    /// Returns the call eventfd the backend signals.
    func setUp(_ f: Frontend, guest: TestGuest) throws -> Int32 {
        let features = Self.u64(try f.ask(.getFeatures))
        let wanted = VirtioFeature.version1 | VirtioFeature.eventIndex | VirtioFeature.indirectDescriptors
            | VhostUserBackend.protocolFeaturesBit
        #expect(features & wanted == wanted, "features 0x\(String(features, radix: 16))")
        let protocolFeatures = Self.u64(try f.ask(.getProtocolFeatures))
        f.send(.setProtocolFeatures, VhostUserPayload.encode(protocolFeatures))
        f.send(.setOwner)
        f.send(.setFeatures, VhostUserPayload.encode(wanted))
        f.send(.setMemTable, VhostUserPayload.encode(memoryTable: TestGuest.regions), fds: [guest.fd, guest.fd])
        let q: UInt32 = 0
        f.send(.setVringNum, VhostUserPayload.encode(VhostUserPayload.VringState(index: q, num: 8)))
        f.send(.setVringAddr, VhostUserPayload.encode(VhostUserPayload.VringAddress(
            index: q, flags: 0, descriptor: Self.user(TestRing.desc), used: Self.user(TestRing.used),
            available: Self.user(TestRing.avail), log: 0)))
        f.send(.setVringBase, VhostUserPayload.encode(VhostUserPayload.VringState(index: q, num: 0)))
        let call = eventfd(0, Int32(EFD_CLOEXEC))
        let kick = eventfd(0, Int32(EFD_CLOEXEC))
        f.send(.setVringCall, VhostUserPayload.encode(UInt64(q)), fds: [call])
        f.send(.setVringKick, VhostUserPayload.encode(UInt64(q)), fds: [kick])
        close(kick)  // the backend has its own copy; nothing here kicks after the buffers are posted
        f.send(.setVringEnable, VhostUserPayload.encode(VhostUserPayload.VringState(index: q, num: 1)))
        // Config space: what the guest's driver reads first (select 0: nothing selected, size 0).
        let config = try f.ask(.getConfig, VhostUserPayload.encode(VhostUserPayload.ConfigAccess(
            offset: 0, size: 8, flags: 0, payload: [UInt8](repeating: 0, count: 8))))
        #expect(config.count == 12 + 8, "GET_CONFIG reply: \(config)")
        return call
    }

    /// Posts four 8-byte writable buffers (virtio_input_event each) on the event queue.
    func postBuffers(_ ring: TestRing) {
        for i in 0..<4 {
            ring.descriptor(i, addr: 0x8000 + 8 * UInt64(i), len: 8, flags: 2 /* WRITE */, next: 0)
            ring.setAvail(slot: i, head: UInt16(i))
        }
        ring.setUsedEvent(0)
        ring.setAvailIndex(4)
    }

    /// Waits (5 s) for the backend to signal `call`.
    func waitForCall(_ call: Int32) -> Bool {
        var pfd = pollfd(fd: call, events: Int16(POLLIN), revents: 0)
        guard poll(&pfd, 1, 5000) == 1 else { return false }
        var counter: UInt64 = 0
        return Glibc.read(call, &counter, 8) == 8
    }

    /// The (type, code, value) of used entry `slot`'s event.
    func event(_ guest: TestGuest, _ ring: TestRing, slot: Int) -> String {
        let id = Int(ring.usedEntry(slot).id)
        let at = 0x8000 + 8 * UInt64(id)
        return "\(guest.get(UInt16.self, at: at)):\(guest.get(UInt16.self, at: at + 2)):\(guest.get(Int32.self, at: at + 4))"
    }

    @Test func aFrontendThatLeavesAndComesBackGetsAWorkingDevice() throws {
        let h = try Harness()
        defer { h.stop() }
        let (runner, keyboard, backend, path) = (h.runner, h.keyboard, h.backend, h.path)
        var log: [String] { h.log }

        // The event the test waits for between rounds: the backend saw the frontend go.
        let departures = DispatchSemaphore(value: 0)
        runner.sync { backend.onConnection = { connected in if !connected { departures.signal() } } }
        for round in 1...2 {
            let guest = try TestGuest()
            let ring = TestRing(size: 8, guest: guest)
            var frontend: Frontend? = try Frontend(path: path)
            let call = try setUp(frontend!, guest: guest)
            defer { close(call) }
            postBuffers(ring)
            // The backend sees the buffers when the ring starts (or at a kick); then a key press.
            #expect(runner.sync { keyboard.press(linuxKeyCode: 30) }, "round \(round)")
            #expect(waitForCall(call), "round \(round): no used-buffer notification; log: \(log)")
            #expect(ring.usedIndex == 2, "round \(round)")
            #expect(event(guest, ring, slot: 0) == "1:30:1" && event(guest, ring, slot: 1) == "0:0:0", "round \(round)")
            #expect(runner.sync { backend.connectionCount } == round)
            // QEMU goes away (exit or crash): the device forgets the driver's rings, and the
            // next round's frontend is a new connection, not a replacement of this one.
            frontend = nil
            #expect(departures.wait(timeout: .now() + 5) == .success, "round \(round): no disconnect seen; log: \(log)")
            #expect(log.last?.contains("frontend disconnected") == true, "round \(round): log: \(log)")
        }
        #expect(!log.contains { $0.contains("dropping the previous connection") }, "log: \(log)")
    }

    @Test func aSecondFrontendReplacesTheFirstAndNonsenseDropsOnlyItsConnection() throws {
        let h = try Harness()
        defer { h.stop() }
        let (runner, keyboard, backend, path) = (h.runner, h.keyboard, h.backend, h.path)
        var log: [String] { h.log }

        // A restarted QEMU connects while the old connection still looks alive.
        let first = try Frontend(path: path)
        _ = try first.ask(.getFeatures)
        let second = try Frontend(path: path)
        _ = try second.ask(.getFeatures)
        #expect(first.closedByBackend(), "the old connection stays open")
        #expect(log.contains { $0.contains("dropping the previous connection") }, "log: \(log)")

        // Hostile frontends, each on its own connection: every one is dropped with a reason.
        let guest = try TestGuest()
        let cases: [(String, (Frontend) -> Void, String)] = [
            ("version 2 header", { $0.sendRaw(VhostUserHeader(request: 1, flags: 2, size: 0).encoded()) }, "bad header"),
            ("payload over the cap", { $0.sendRaw(VhostUserHeader(request: 5, flags: 1, size: 1 << 20).encoded()) }, "bad header"),
            ("memory table without its fds", {
                $0.send(.setMemTable, VhostUserPayload.encode(memoryTable: TestGuest.regions), fds: [guest.fd])
            }, "expected 2 file descriptors"),
            ("queue 7 of 2", {
                $0.send(.setVringNum, VhostUserPayload.encode(VhostUserPayload.VringState(index: 7, num: 8)))
            }, "no queue 7"),
            ("queue size 3", {
                $0.send(.setVringNum, VhostUserPayload.encode(VhostUserPayload.VringState(index: 0, num: 3)))
            }, "queue size 3"),
            ("features never offered", { $0.send(.setFeatures, VhostUserPayload.encode(UInt64(1) << 63)) }, "did not offer"),
            ("truncated payload", { $0.send(.setVringNum, [1, 2, 3]) }, "request 8"),
        ]
        for (name, misbehave, reason) in cases {
            let f = try Frontend(path: path)
            misbehave(f)
            #expect(f.closedByBackend(), "\(name): the connection stayed open; log: \(log)")
            #expect(log.last?.contains(reason) == true, "\(name): log ends \(log.last ?? "")")
        }

        // After all that, a well-behaved frontend gets a working keyboard.
        let ring = TestRing(size: 8, guest: guest)
        let frontend = try Frontend(path: path)
        let call = try setUp(frontend, guest: guest)
        defer { close(call) }
        postBuffers(ring)
        #expect(runner.sync { keyboard.press(linuxKeyCode: 44) })
        #expect(waitForCall(call), "log: \(log)")
        #expect(event(guest, ring, slot: 0) == "1:44:1")
        #expect(runner.sync { backend.brokenReason } == nil)
    }
}
