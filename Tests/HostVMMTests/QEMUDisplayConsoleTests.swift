import TestSupport
import AgentProtocol
import Foundation
import LinuxSystem
import Testing
@testable import HostVMM

/// QEMUDisplayConsole against a scripted QEMU end of its socketpair: the
/// exchange it must make, and what it does with a peer that misbehaves. The
/// real QEMU is DisplayEndToEndTests' peer; these cases cannot be made with it.
@Suite(.timeLimit(.minutes(30))) struct QEMUDisplayConsoleTests {
    /// The console on a loop thread, the test holding QEMU's end.
    final class Harness: @unchecked Sendable {
        let thread: LoopThread
        let qemuEnd: Int32
        var console: QEMUDisplayConsole!
        private let lock = NSLock()
        private var logLines: [String] = []
        private var applied: [String] = []
        private var received: [UInt8] = []

        init() throws {
            thread = try LoopThread()
            var pair: [Int32] = [-1, -1]
            guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &pair) == 0 else { throw TestFailure("socketpair") }
            qemuEnd = pair[1]
            let ours = pair[0]
            thread.sync { [self] in
                console = try! QEMUDisplayConsole(fd: ours, loop: thread.loop)
                console.onLog = { line in self.lock.withLock { self.logLines.append(line) } }
                console.onApplied = { w, h in self.lock.withLock { self.applied.append("\(w)x\(h)") } }
            }
        }

        deinit {
            thread.sync { [console] in console?.close() }
            thread.stop()
            close(qemuEnd)
        }

        var log: [String] { lock.withLock { logLines } }
        var appliedSizes: [String] { lock.withLock { applied } }
        /// nil if the loop did not answer within 5 s.
        var isOpen: Bool? { thread.onLoop(timeout: 5) { [console] finish in finish(console!.isOpen) } }

        func setSize(_ w: Int, _ h: Int) { thread.sync { [console] in console!.setSize(width: w, height: h) } }

        func write(_ bytes: [UInt8]) { _ = Syscall.writeAll(fd: qemuEnd, bytes, stallTimeoutMs: 5000) }

        /// Reads what the console sent until `count` bytes are there (bounded).
        func read(_ count: Int) throws -> [UInt8] {
            let deadline = Date().addingTimeInterval(10)
            while received.count < count {
                var pfd = pollfd(fd: qemuEnd, events: Int16(POLLIN), revents: 0)
                guard Date() < deadline, poll(&pfd, 1, 200) >= 0 else { break }
                if pfd.revents == 0 { continue }
                var buffer = [UInt8](repeating: 0, count: 65536)
                let n = Glibc.read(qemuEnd, &buffer, buffer.count)
                if n <= 0 { break }
                received += buffer[..<n]
            }
            guard received.count >= count else {
                throw TestFailure("the console sent \(received.count) bytes, wanted \(count): \(received)")
            }
            defer { received.removeFirst(count) }
            return Array(received[..<count])
        }

        func readLine() throws -> String {
            var line: [UInt8] = []
            while line.last != 0x0A { line += try read(1) }
            return String(decoding: line, as: UTF8.self)
        }

        func readMessage() throws -> DBusMessage {
            var bytes = try read(16)
            let total = try #require(try DBusMessage.frameLength(bytes[...]))
            bytes += try read(total - 16)
            return try #require(try DBusMessage.decode(bytes[...])).0
        }

        /// Waits (bounded) until `condition` holds.
        func wait(_ what: String, _ condition: () -> Bool) -> Bool {
            let deadline = Date().addingTimeInterval(10)
            while !condition() && Date() < deadline { usleep(20_000) }
            return condition()
        }
    }

    @Test func authenticatesThenCallsSetUIInfoAndReportsTheAnswer() throws {
        let h = try Harness()
        h.setSize(1280, 800)  // before authentication: sent once it is done
        #expect(try h.readLine() == "\0AUTH EXTERNAL \(Array(String(getuid()).utf8).map { String($0, radix: 16) }.joined())\r\n")
        h.write(Array("OK 1234567890abcdef1234567890abcdef\r\n".utf8))
        #expect(try h.readLine() == "BEGIN\r\n")
        let call = try h.readMessage()
        #expect(call.kind == .methodCall && call.member == "SetUIInfo" && call.destination == nil)
        #expect(call.path == "/org/qemu/Display1/Console_0" && call.interface == "org.qemu.Display1.Console")
        #expect(call.body == [.uint16(0), .uint16(0), .int32(0), .int32(0), .uint32(1280), .uint32(800)])
        var reply = DBusMessage(kind: .methodReturn, serial: 1)
        reply.replySerial = call.serial
        h.write(reply.encode())
        #expect(h.wait("applied") { h.appliedSizes == ["1280x800"] }, "applied: \(h.appliedSizes); log: \(h.log)")

        // QEMU says no (e.g. a console without ui_info): logged, nothing applied, still open.
        h.setSize(800, 600)
        let second = try h.readMessage()
        var error = DBusMessage(kind: .error, serial: 2, body: [.string("SetUIInfo is not supported")])
        error.replySerial = second.serial
        error.errorName = "org.qemu.Display1.Error.Unsupported"
        h.write(error.encode())
        #expect(h.wait("refusal logged") { h.log.contains { $0.contains("QEMU refused 800x600") && $0.contains("not supported") } },
                "log: \(h.log)")
        #expect(h.appliedSizes == ["1280x800"] && h.isOpen == true)
    }

    @Test func aRefusedAuthenticationClosesWithAReason() throws {
        let h = try Harness()
        _ = try h.readLine()
        h.write(Array("REJECTED ANONYMOUS\r\n".utf8))
        #expect(h.wait("closed") { h.isOpen == false })
        #expect(h.log.contains { $0.contains("refused us: REJECTED ANONYMOUS") }, "log: \(h.log)")
        h.setSize(1024, 768)
        #expect(h.log.last?.contains("connection is closed") == true, "log: \(h.log)")
    }

    @Test func garbageAndOversizeFromQEMUCloseTheConnectionOnly() throws {
        for (name, junk, reason) in [
            ("bad byte order", [UInt8](repeating: 0x42, count: 64), "not little-endian"),
            // A header announcing 100 MiB, then more than the 1 MiB the console keeps.
            ("oversize", [0x6C, 2, 0, 1, 0, 0, 0x40, 0x06, 1, 0, 0, 0, 0, 0, 0, 0] + [UInt8](repeating: 0, count: 1_100_000),
             "more than 1 MiB unparsed"),
        ] as [(String, [UInt8], String)] {
            let h = try Harness()
            _ = try h.readLine()
            h.write(Array("OK 1234567890abcdef1234567890abcdef\r\n".utf8))
            _ = try h.readLine()
            // A call waits for its answer: the junk must not be taken for it.
            h.setSize(800, 600)
            #expect(try h.readMessage().member == "SetUIInfo")
            h.write(junk)
            #expect(h.wait("closed") { h.isOpen == false }, "\(name): log \(h.log)")
            #expect(h.log.contains { $0.contains(reason) && $0.contains("closing that connection") }, "\(name): log \(h.log)")
            #expect(h.appliedSizes.isEmpty, "\(name): \(h.appliedSizes)")
        }
    }

    /// A QEMU that takes the calls and never answers: after 64 the connection is given up.
    @Test func aPeerThatNeverAnswersIsGivenUp() throws {
        let h = try Harness()
        _ = try h.readLine()
        h.write(Array("OK 1234567890abcdef1234567890abcdef\r\n".utf8))
        _ = try h.readLine()
        for i in 0..<QEMUDisplayConsole.maxUnanswered {
            h.setSize(640 + i, 480)
            #expect(try h.readMessage().member == "SetUIInfo")
        }
        #expect(h.isOpen == true)
        h.setSize(1024, 768)
        #expect(h.wait("closed") { h.isOpen == false })
        #expect(h.log.contains { $0.contains("answered none of the last 64") }, "log: \(h.log)")
    }
}
