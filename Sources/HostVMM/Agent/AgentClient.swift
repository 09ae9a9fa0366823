import AgentProtocol
import LinuxSystem

/// Host side of the QGA channel (architecture.md §3, protocols.md §1.3).
///
/// One request at a time. Before the first request, and after any timeout, it
/// synchronises: sends 0xFF (the agent drops any half-read request) and
/// `guest-sync-delimited` with a fresh random id, then ignores everything until
/// a 0xFF followed by `{"return": id}`. Replies to older syncs (they pile up
/// while the guest has the port closed) do not match and are skipped.
final class AgentClient {
    typealias Completion = (Result<JSONValue?, AgentError>) -> Void

    struct Request {
        var bytes: [UInt8]
        var expectsReply: Bool
        var timeoutMs: UInt64
        var completion: Completion
    }

    enum State: Equatable {
        /// No chardev connection, or the guest has the port closed.
        case absent
        /// Port open; a sync is in flight (`sawDelimiter`: its 0xFF has arrived).
        case syncing(id: Int64, sawDelimiter: Bool)
        case ready
        case busy
    }

    private let loop: EventLoop
    private var connection: LineConnection?
    private(set) var state = State.absent
    private var guestPortOpen = false
    private var queue: [Request] = []
    private var current: Request?
    private var timer: TimerHandle?
    let syncTimeoutMs: UInt64

    /// Fires when a sync completes after the agent was not ready.
    var onReady: () -> Void = {}
    /// Fires when the agent stops being reachable (port closed, channel lost, timeout).
    var onUnready: (String) -> Void = { _ in }

    init(loop: EventLoop, syncTimeoutMs: UInt64 = 2000) {
        self.loop = loop
        self.syncTimeoutMs = syncTimeoutMs
    }

    var isReady: Bool { state == .ready || state == .busy }

    /// QEMU connected the chardev of org.qemu.guest_agent.0 to us.
    func attach(fd: Int32) throws(SystemError) {
        connection?.close()
        let conn = try LineConnection(fd: fd, loop: loop, framer: LineFramer(delimiterResets: true))
        conn.onOutput = { [unowned self] output in self.received(output) }
        conn.onClose = { [unowned self, unowned conn] in
            guard self.connection === conn else { return }
            self.connection = nil
            self.becomeAbsent("agent chardev connection closed", failWith: .channelClosed)
        }
        connection = conn
        if guestPortOpen { startSync() }
    }

    /// The guest opened or closed its end of the port (QMP VSERPORT_CHANGE, query-chardev).
    func guestPort(open: Bool) {
        guard open != guestPortOpen else { return }
        guestPortOpen = open
        if open {
            startSync()
        } else {
            becomeAbsent("guest closed org.qemu.guest_agent.0", failWith: .notConnected)
        }
    }

    /// Sends a raw request. `expectsReply: false` is for commands that are silent
    /// on success (guest-shutdown): completion gets `nil` if no error arrives in time.
    func send(_ request: QGARequest, expectsReply: Bool = true, timeoutMs: UInt64 = 5000, completion: @escaping Completion) {
        var bytes = request.encode()
        bytes.append(0x0A)
        let req = Request(bytes: bytes, expectsReply: expectsReply, timeoutMs: timeoutMs, completion: completion)
        guard guestPortOpen, connection != nil else {
            completion(.failure(.notConnected))
            return
        }
        queue.append(req)
        pump()
    }

    // MARK: - State machine

    private func startSync() {
        guard let connection, guestPortOpen else { return }
        let id = Int64.random(in: 1...Int64(Int32.max))
        state = .syncing(id: id, sawDelimiter: false)
        var bytes: [UInt8] = [QGAReply.delimiter]
        bytes += QGARequest(execute: "guest-sync-delimited", arguments: ["id": .int(id)]).encode()
        bytes.append(0x0A)
        connection.resetFraming()
        connection.send(bytes)
        restartTimer(syncTimeoutMs) { [unowned self] in
            // Nobody answered: requests waiting longer than their own bound fail;
            // the sync is retried while the port stays open.
            self.expireQueued()
            self.startSync()
        }
    }

    private func pump() {
        guard state == .ready, current == nil, !queue.isEmpty, let connection else { return }
        let req = queue.removeFirst()
        current = req
        state = .busy
        connection.send(req.bytes)
        restartTimer(req.timeoutMs) { [unowned self] in self.currentTimedOut() }
    }

    private func currentTimedOut() {
        guard let req = current else { return }
        current = nil
        if req.expectsReply {
            req.completion(.failure(.timeout(milliseconds: req.timeoutMs)))
            onUnready("guest agent timed out after \(req.timeoutMs) ms; resynchronising")
        } else {
            req.completion(.success(nil))
        }
        // A late reply may still come: resynchronise before the next request.
        startSync()
    }

    private func expireQueued() {
        // Requests queued while syncing keep their own deadline, measured from now
        // on each failed sync round; the simplest bound that never hangs.
        let expired = queue
        queue = []
        for req in expired { req.completion(.failure(.timeout(milliseconds: syncTimeoutMs))) }
    }

    private func becomeAbsent(_ reason: String, failWith error: AgentError) {
        let wasReady = isReady
        loop.cancel(timer)
        timer = nil
        state = .absent
        // A silent command already sent (guest-shutdown) typically ends with the
        // agent being killed and the port closing: that is its success, not a failure.
        if let sent = current, !sent.expectsReply {
            sent.completion(.success(nil))
        } else {
            current?.completion(.failure(error))
        }
        let failed = queue
        current = nil
        queue = []
        for req in failed { req.completion(.failure(error)) }
        if wasReady { onUnready(reason) }
    }

    private func restartTimer(_ ms: UInt64, _ handler: @escaping () -> Void) {
        loop.cancel(timer)
        timer = loop.schedule(afterMilliseconds: ms, handler)
    }

    private func received(_ output: LineFramer.Output) {
        switch state {
        case .absent, .ready:
            return  // nothing asked for: stray lines (such as the answer to our 0xFF) are dropped
        case .syncing(let id, let sawDelimiter):
            switch output {
            case .delimiter:
                state = .syncing(id: id, sawDelimiter: true)
            case .line(let bytes):
                guard sawDelimiter else { return }
                if let v = try? JSONParser.parse(bytes), case .success(let ret, _)? = QGAReply.decode(v),
                    ret.int64Value == id
                {
                    loop.cancel(timer)
                    timer = nil
                    state = .ready
                    onReady()
                    pump()
                } else {
                    state = .syncing(id: id, sawDelimiter: false)
                }
            case .oversized:
                state = .syncing(id: id, sawDelimiter: false)
            }
        case .busy:
            guard let req = current else { return }
            let result: Result<JSONValue?, AgentError>
            switch output {
            case .delimiter:
                return
            case .oversized(let n):
                result = .failure(.agent(.generic("reply of \(n) bytes exceeds the \(LineFramer.defaultMaxLineBytes)-byte limit")))
            case .line(let bytes):
                guard let v = try? JSONParser.parse(bytes), let reply = QGAReply.decode(v) else {
                    return  // garbage between replies: keep waiting until the timeout
                }
                switch reply {
                case .success(let value, _): result = .success(value)
                case .failure(let e, _): result = .failure(.agent(e))
                }
            }
            loop.cancel(timer)
            timer = nil
            current = nil
            state = .ready
            req.completion(result)
            pump()
        }
    }
}
