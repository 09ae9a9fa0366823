/// What to do with a guest after its panic has been captured (`--on-panic`).
///
/// - `restart` (default): reset the guest; after `CrashLoopGuard.limit` panics
///   within its window it stays paused instead, because a crash loop is a
///   person's problem, not a machine's.
/// - `pause`: stay paused for inspection (`hostvmm down` ends it).
/// - `poweroff`: stop the VM; hostvmm exits with status 1.
/// - `preserve`: like pause, and the bundle is kept forever (exempt from the
///   keep-newest-N pruning), for a panic that must not be lost.
public enum PanicPolicy: String, Sendable, CaseIterable {
    case restart, pause, poweroff, preserve
}

/// The decision after a panic.
public enum PanicAction: Sendable, Equatable {
    case reset
    case stayPaused(reason: String)
    case powerOff
}

/// Counts panics in a sliding window: 3 within 10 minutes is a crash loop.
public struct CrashLoopGuard: Sendable {
    public static let defaultLimit = 3
    public static let defaultWindowSeconds = 600.0

    public let limit: Int
    public let windowSeconds: Double
    private var times: [Double] = []

    public init(limit: Int = defaultLimit, windowSeconds: Double = defaultWindowSeconds) {
        self.limit = limit
        self.windowSeconds = windowSeconds
    }

    /// Records a panic at `time` (seconds); true when it completes a crash loop.
    public mutating func record(at time: Double) -> Bool {
        times.append(time)
        times.removeAll { $0 <= time - windowSeconds }
        return times.count >= limit
    }

    public var recentCount: Int { times.count }
}

extension PanicPolicy {
    /// The action for a panic under this policy, given whether it completed a crash loop.
    public func action(crashLoop: Bool) -> PanicAction {
        switch self {
        case .restart:
            return crashLoop
                ? .stayPaused(reason: "crash loop: \(CrashLoopGuard.defaultLimit) panics within \(Int(CrashLoopGuard.defaultWindowSeconds / 60)) minutes")
                : .reset
        case .pause: return .stayPaused(reason: "policy pause")
        case .preserve: return .stayPaused(reason: "policy preserve")
        case .poweroff: return .powerOff
        }
    }
}
