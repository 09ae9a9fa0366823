import LinuxSystem
#if canImport(Glibc)
import Glibc
#endif

// A reply to a host that just closed its socket must not kill the agent.
signal(SIGPIPE, SIG_IGN)

if CommandLine.arguments.count > 1 && CommandLine.arguments[1] == "clipboard" {
    exit(ClipboardService.runClient(Array(CommandLine.arguments.dropFirst(2))))
}

switch AgentCommandLine.parse(Array(CommandLine.arguments.dropFirst())) {
case .exit(let code, let message):
    _ = Syscall.writeAll(fd: code == 0 ? 1 : 2, Array(message.utf8))
    exit(code)
case .run(let config):
    if let logFile = config.logFile {
        let fd = open(logFile, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        if fd >= 0 { dup2(fd, 2) } else { Log.info("cannot open log file \(logFile): \(FileIO.errnoText())") }
    }
    if let pidFile = config.pidFile {
        do { try FileIO.writeAtomically(pidFile, Array("\(getpid())\n".utf8), mode: 0o644) } catch {
            Log.info("cannot write pid file: \(error)")
        }
    }
    let state = AgentState(config: config)
    state.freeze.recoverAfterRestart()
    let pipeline = RequestPipeline(dispatcher: Dispatcher(state: state))
    if let spicePath = config.effectiveSpicePath {
        let store = ClipboardStore()
        ClipboardService.start(stateDir: config.stateDir, store: store)
        let headless = HeadlessClipboard(store: store)
        var clipboard: ClipboardBackend = headless
        if let display = config.x11Display, !display.isEmpty {
            let x11 = X11Clipboard(displayName: display)
            clipboard = DisplayClipboard(headless: headless, x11: x11)
            x11.start()
        }
        let channel = SpiceChannel(path: spicePath, clipboard: clipboard)
        if config.lockOnDisconnect {
            channel.disconnectLocker = DisconnectLocker(
                graceSeconds: config.lockGraceSeconds, busPath: config.systemBusPath
            ) { [weak channel] notice in channel?.sendToPort(notice) }
        }
        channel.start()
    }
    switch config.method {
    case .virtioSerial:
        exit(Channel.runVirtioSerial(path: config.channelPath, pipeline: pipeline))
    case .unixListen:
        exit(Channel.runUnixListen(path: config.channelPath, pipeline: pipeline))
    }
}
