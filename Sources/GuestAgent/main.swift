#if canImport(Glibc)
import Glibc
#endif

// A reply to a host that just closed its socket must not kill the agent.
signal(SIGPIPE, SIG_IGN)

switch AgentOptions.parse(Array(CommandLine.arguments.dropFirst())) {
case .exit(let code, let message):
    _ = message.withCString { write(code == 0 ? 1 : 2, $0, strlen($0)) }
    exit(code)
case .run(let options):
    let dispatcher = Dispatcher(verbose: options.verbose)
    switch options.method {
    case .virtioSerial:
        exit(Channel.runVirtioSerial(path: options.channelPath, dispatcher: dispatcher))
    case .unixListen:
        exit(Channel.runUnixListen(path: options.channelPath, dispatcher: dispatcher))
    }
}
