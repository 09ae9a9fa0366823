import Foundation

/// One in-process SpiceServer at a time: libspice-server's core and its
/// worker threads are per process, so suites that run a server in the test
/// process (SpiceDisplayTests, X11ClipboardTests, HostileGuestStreamTests)
/// take turns.
enum InProcessSpice {
    static let gate = DispatchSemaphore(value: 1)
}
