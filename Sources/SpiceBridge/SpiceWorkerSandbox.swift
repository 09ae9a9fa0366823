import ThreadSandbox

/// spice-server's display worker thread parses what display and cursor channel
/// clients send; it runs under ThreadSandbox.spiceWorker unless the person
/// asked for --no-sandbox. The worker is spice-server's own thread, so the
/// filter goes on from inside it: the first callback it makes into us.
extension SpiceDisplay {
    /// The filter for worker threads started from now on; nil: none (--no-sandbox).
    nonisolated(unsafe) public static var workerSandbox: ThreadSandbox.Profile? = ThreadSandbox.spiceWorker
    /// Why the kernel refused the filter, if it did (the worker then runs unfiltered).
    nonisolated(unsafe) public private(set) static var workerSandboxFailure: ThreadSandbox.Failure?

    static func enterWorkerSandbox() {
        guard let profile = workerSandbox, workerSandboxFailure == nil, !ThreadSandbox.isAppliedOnThisThread else { return }
        if case .failure(let failure) = ThreadSandbox.apply(profile) { workerSandboxFailure = failure }
    }
}
