import AgentProtocol
import Foundation
import TestSupport
import Testing

/// Sound end to end (issue #12): the real guest's ALSA (Debian's aplay and
/// arecord) on our virtio-snd behind QEMU's vhost-user-snd-pci, heard by a real
/// spice-gtk client and by a real PulseAudio server's null sink, and a client's
/// microphone recorded in the guest. Frequencies and levels are measured
/// (Clients/tone.py: FFT peak, RMS) on what the peers actually received.
@Suite(.serialized, .timeLimit(.minutes(30))) struct AudioEndToEndTests {
    /// A tone made with sox: `seconds` of `hz` at -6 dBFS peak, 48 kHz S16 stereo.
    static func toneFile(hz: Int, seconds: Double) throws -> [UInt8] {
        let path = "\(try TestEnvironment.temporaryDirectory("tone"))/tone.wav"
        let made = try runCommand("/usr/bin/sox", ["-n", "-r", "48000", "-e", "signed", "-b", "16", "-c", "2", path,
                                                   "synth", String(seconds), "sine", String(hz), "gain", "-6"])
        guard made.status == 0 else { throw TestFailure("sox: \(made.output)") }
        return [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
    }

    /// (frequency, RMS dBFS, seconds of sound) of a WAV, or of raw S16LE 48 kHz stereo.
    static func analyse(_ path: String, raw: Bool = false) throws -> (hz: Double, db: Double, seconds: Double) {
        let r = try runCommand("/usr/bin/python3", [TestEnvironment.toneAnalysis, path] + (raw ? ["48000", "2"] : []))
        let f = r.output.split(separator: " ")
        guard r.status == 0, f.count == 6, let hz = Double(f[1]), let db = Double(f[3]), let s = Double(f[5]) else {
            throw TestFailure("tone.py: \(r.output)")
        }
        return (hz, db, s)
    }

    /// A spice-gtk client that writes what it hears to `file` for `seconds`.
    static func listen(_ uri: String, into file: String, seconds: Int) throws -> WatchedProcess {
        try WatchedProcess("/usr/bin/python3", [TestEnvironment.spiceAudioClient, uri, "listen", file, String(seconds)])
    }

    /// Level of the guest's own file: what the peers should hear (within 1 dB).
    static let guestLevel = -9.03

    func audioStreamEvents(_ vm: BootedVM) -> Int { vm.up.count(containing: "\"event\": \"audio-stream\"") }

    /// Waits until `hostvmm up` has printed `count` audio-stream events.
    func waitForStreamEvents(_ vm: BootedVM, _ count: Int, _ what: String) throws {
        guard vm.waitForOccurrence("\"event\": \"audio-stream\"", count: count, timeout: 60) else {
            throw TestFailure("no audio-stream event (\(what)) within 60 s:\n\(vm.postMortem())")
        }
    }

    func audio(_ vm: BootedVM) throws -> JSONValue {
        let r = try vm.cli(["audio", vm.name])
        guard r.status == 0 else { throw TestFailure("hostvmm audio: \(r.output)") }
        return try JSONParser.parse(r.output)
    }

    @Test func guestSoundReachesSpiceAndPulseAndTheMicrophoneRecords() throws {
        let pulse = try PulseServer()
        let vm = try BootedVM(name: "e2e-audio", options: ["--audio", "spice+pulse", "--pulse-server", pulse.address])
        let work = try TestEnvironment.temporaryDirectory("audio")
        #expect(vm.up.count(containing: "sound goes to SPICE and PulseAudio") == 1, "\(vm.up.transcript)")
        let cards = try vm.guestRun("cat /proc/asound/cards; aplay -l").output
        #expect(cards.contains("VirtIO SoundCard"), "\(cards)")
        try vm.putFile("/tmp/tone1k.wav", try Self.toneFile(hz: 1000, seconds: 3))
        try vm.putFile("/tmp/long1k.wav", try Self.toneFile(hz: 1000, seconds: 8))
        let uri = try vm.cli(["spice", vm.name]).output.trimmingCharacters(in: .whitespacesAndNewlines)

        // 1. A 1 kHz tone: the SPICE client and PulseAudio's null sink both hear it.
        let heard = "\(work)/spice.raw", sunk = "\(work)/pulse.raw"
        let client = try Self.listen(uri, into: heard, seconds: 30)
        #expect(client.waitForLine(containing: "connected", timeout: 30) != nil, "\(client.transcript)")
        let recorder = try pulse.recordSink(into: sunk)
        let before = audioStreamEvents(vm)
        let played = try vm.guestRun("aplay /tmp/tone1k.wav 2>&1; echo exit=$?")
        #expect(played.output.contains("exit=0"), "\(played.output)")
        try waitForStreamEvents(vm, before + 2, "playback start and stop")
        #expect(client.waitForLine(containing: "stop", timeout: 30) != nil, "client: \(client.transcript)")
        client.signal(SIGINT)
        _ = client.waitForExit(timeout: 10)
        recorder.signal(SIGINT)
        _ = recorder.waitForExit(timeout: 10)
        let spice = try Self.analyse(heard, raw: true)
        #expect(abs(spice.hz - 1000) <= 5, "SPICE client heard \(spice)")
        #expect(abs(spice.db - Self.guestLevel) <= 1, "SPICE client heard \(spice)")
        #expect(spice.seconds >= 2, "SPICE client heard \(spice)")
        let local = try Self.analyse(sunk, raw: true)
        #expect(abs(local.hz - 1000) <= 5, "PulseAudio sink got \(local)")
        #expect(abs(local.db - Self.guestLevel) <= 1, "PulseAudio sink got \(local)")
        // aplay took the tone's real length: the device paces the guest (3 s at 48 kHz).
        let status = try audio(vm)
        #expect(status["streams"]?.arrayValue?.first?["bytes"]?.int64Value == 576_000, "\(JSONWriter.string(status))")
        #expect(status["streams"]?.arrayValue?.first?["underruns"]?.int64Value == 0, "\(JSONWriter.string(status))")
        // spice-gtk itself sent its sink's volume (1.0, a `volume` element in the client's
        // pipeline) through the guest agent: full scale, as the levels above show.
        #expect(status["client-volume"]?["playback"]?["volume"] == .array([65535, 65535]), "\(JSONWriter.string(status))")

        // 2. The client's microphone: a 440 Hz tone sent by spice-gtk, recorded by arecord.
        let mic = try WatchedProcess("/usr/bin/python3", [TestEnvironment.spiceAudioClient, uri, "mic", "440", "12"])
        #expect(mic.waitForLine(containing: "connected", timeout: 30) != nil, "\(mic.transcript)")
        let recorded = try vm.guestRun("arecord -f S16_LE -r 48000 -c 2 -d 4 /tmp/mic.wav 2>&1; echo exit=$?")
        #expect(recorded.output.contains("exit=0"), "\(recorded.output)")
        #expect(mic.transcript.contains("record-start"), "\(mic.transcript)")
        mic.signal(SIGINT)
        _ = mic.waitForExit(timeout: 10)
        let micFile = "\(work)/mic.wav"
        try Data(try vm.getFile("/tmp/mic.wav")).write(to: URL(fileURLWithPath: micFile))
        let captured = try Self.analyse(micFile)
        #expect(abs(captured.hz - 440) <= 5, "the guest recorded \(captured)")
        #expect(captured.seconds >= 2, "the guest recorded \(captured)")
        // At another rate and channel count, converted on the way: 16 kHz mono.
        let mic2 = try WatchedProcess("/usr/bin/python3", [TestEnvironment.spiceAudioClient, uri, "mic", "440", "10"])
        #expect(mic2.waitForLine(containing: "connected", timeout: 30) != nil, "\(mic2.transcript)")
        _ = try vm.guestRun("arecord -f S16_LE -r 16000 -c 1 -d 4 /tmp/mic16.wav")
        mic2.signal(SIGINT)
        _ = mic2.waitForExit(timeout: 10)
        try Data(try vm.getFile("/tmp/mic16.wav")).write(to: URL(fileURLWithPath: "\(work)/mic16.wav"))
        let mono = try Self.analyse("\(work)/mic16.wav")
        #expect(abs(mono.hz - 440) <= 5, "the guest recorded (16 kHz mono) \(mono)")

        // 3. The client leaves abruptly mid-stream; the next one hears the stream go on.
        let events = audioStreamEvents(vm)
        try vm.guestShell("aplay /tmp/long1k.wav")
        try waitForStreamEvents(vm, events + 1, "long playback start")
        let leaver = try WatchedProcess("/usr/bin/python3", [TestEnvironment.spiceAudioClient, uri, "quit-after-start"])
        #expect(leaver.waitForLine(containing: "left", timeout: 30) != nil, "\(leaver.transcript)")
        let again = "\(work)/again.raw"
        let second = try Self.listen(uri, into: again, seconds: 4)
        _ = second.waitForExit(timeout: 30)
        let resumed = try Self.analyse(again, raw: true)
        #expect(abs(resumed.hz - 1000) <= 5 && resumed.seconds >= 1.5, "the second client heard \(resumed): \(second.transcript)")

        // 4. PulseAudio dies mid-stream: the VM and SPICE's sound go on, with a clear line.
        let listener = try Self.listen(uri, into: "\(work)/during.raw", seconds: 5)
        #expect(listener.waitForLine(containing: "connected", timeout: 30) != nil)
        pulse.kill()
        #expect(vm.up.waitForLine(containing: "lost the PulseAudio server", timeout: 30) != nil, "\(vm.up.transcript)")
        _ = listener.waitForExit(timeout: 30)
        let during = try Self.analyse("\(work)/during.raw", raw: true)
        #expect(abs(during.hz - 1000) <= 5 && during.seconds >= 1.5, "SPICE during the loss: \(during)")
        try waitForStreamEvents(vm, events + 2, "long playback stop")
        #expect(try vm.cli(["ping", vm.name]).status == 0)
        #expect(try audio(vm)["sinks"]?["pulse"]?["state"]?.stringValue == "failed")
        // A server that comes back is used at the guest's next stream.
        try pulse.restart()
        let back = try pulse.recordSink(into: "\(work)/back.raw")
        let played2 = try vm.guestRun("aplay /tmp/tone1k.wav 2>&1; echo exit=$?")
        #expect(played2.output.contains("exit=0"))
        back.signal(SIGINT)
        _ = back.waitForExit(timeout: 10)
        let backTone = try Self.analyse("\(work)/back.raw", raw: true)
        #expect(abs(backTone.hz - 1000) <= 5, "PulseAudio after its restart got \(backTone)")

        // With no SPICE client's microphone, the guest records the host's default source.
        _ = try vm.guestRun("arecord -f S16_LE -r 48000 -c 2 -d 4 /tmp/host-mic.wav")
        try Data(try vm.getFile("/tmp/host-mic.wav")).write(to: URL(fileURLWithPath: "\(work)/host-mic.wav"))
        let hostMic = try Self.analyse("\(work)/host-mic.wav")
        #expect(abs(hostMic.hz - Double(PulseServer.sourceHz)) <= 5 && hostMic.seconds >= 1.0,
                "the guest recorded from PulseAudio: \(hostMic)")

        // 5. The client's volume (VD_AGENT_AUDIO_VOLUME_SYNC, through our guest agent), as
        // spice-gtk sends it (GStreamer's cubic volume): half is 18 dB down, mute is silence,
        // full is the guest's level again.
        for (volume, mute, expected) in [(32768, 0, Self.guestLevel - 18.06), (65535, 1, -200.0), (65535, 0, Self.guestLevel)] {
            let notices = vm.up.count(containing: "\"event\": \"audio-volume\"")
            let sent = try runCommand("/usr/bin/python3", [SpiceClipboardTests.hostileClient, uri, "volume", "playback",
                                                           String(mute), String(volume), String(volume)], timeout: 60)
            #expect(sent.output.contains("sent volume"), "\(sent.output)")
            #expect(vm.waitForOccurrence("\"event\": \"audio-volume\"", count: notices + 1, timeout: 30),
                    "no audio-volume event: \(vm.up.transcript.suffix(2000))")
            let file = "\(work)/volume-\(volume)-\(mute).raw"
            let sink = try pulse.recordSink(into: file)
            #expect(try vm.guestRun("aplay -q /tmp/tone1k.wav; echo exit=$?").output.contains("exit=0"))
            sink.signal(SIGINT)
            _ = sink.waitForExit(timeout: 10)
            let level = try Self.analyse(file, raw: true)
            if mute == 1 {
                #expect(level.hz == 0, "muted, PulseAudio still got \(level)")
            } else {
                #expect(abs(level.db - expected) <= 1 && abs(level.hz - 1000) <= 5, "at volume \(volume): \(level)")
            }
        }
        let volume = try audio(vm)["client-volume"]
        #expect(volume?["playback"]?["mute"]?.boolValue == false, "\(volume.map(JSONWriter.string) ?? "none")")
        #expect(volume?["playback"]?["volume"] == .array([65535, 65535]), "\(volume.map(JSONWriter.string) ?? "none")")

        _ = try vm.cli(["down", vm.name])
        #expect(vm.upExitCode() == 0)
    }

    @Test func streamsSurviveChurnAndHostileRequests() throws {
        let vm = try BootedVM(name: "e2e-audio-hostile", options: ["--audio", "spice"],
                              extraEnvironment: ["HOSTVMM_TEST_HOOKS": "1"])
        let work = try TestEnvironment.temporaryDirectory("audio-hostile")
        try vm.putFile("/tmp/click.wav", try Self.toneFile(hz: 1000, seconds: 0.02))
        try vm.putFile("/tmp/tone1k.wav", try Self.toneFile(hz: 1000, seconds: 2))
        let uri = try vm.cli(["spice", vm.name]).output.trimmingCharacters(in: .whitespacesAndNewlines)

        // 1. The guest starts and stops its stream 100 times.
        let loop = try vm.guestRun(
            "i=0; while [ $i -lt 100 ]; do aplay -q /tmp/click.wav || { echo failed at $i; exit 1; }; i=$((i+1)); done; echo done",
            timeout: 600)
        #expect(loop.output.contains("done"), "\(loop.output)")
        var status = try audio(vm)
        #expect(status["streams"]?.arrayValue?.first?["starts"]?.int64Value == 100, "\(JSONWriter.string(status))")
        #expect(status["bad-requests"]?.int64Value == 0, "\(JSONWriter.string(status))")
        #expect(status["streams"]?.arrayValue?.first?["state"]?.stringValue == "released")

        // Plain `arecord` (its default U8 8 kHz mono) works through the default device's converter.
        let plain = try vm.guestRun("arecord -d 1 /tmp/plain.wav 2>&1; echo exit=$?")
        #expect(plain.output.contains("exit=0"), "\(plain.output)")

        // 2. Hostile control requests, one of each kind: aplay fails with the error, nothing else does.
        _ = try vm.cli(["audio", vm.name, "--debug-corrupt", "requests=3"])
        for kind in 0..<3 {
            let r = try vm.guestRun("aplay -q /tmp/click.wav 2>&1; echo exit=$?")
            #expect(!r.output.contains("exit=0"), "corrupted request \(kind) went unnoticed: \(r.output)")
        }
        status = try audio(vm)
        #expect(status["bad-requests"]?.int64Value == 3, "\(JSONWriter.string(status))")
        // Hostile transfers (another stream's id, a torn frame): returned with BAD_MSG, the stream goes on.
        _ = try vm.cli(["audio", vm.name, "--debug-corrupt", "transfers=2"])
        let torn = try vm.guestRun("aplay -q /tmp/tone1k.wav 2>&1; echo exit=$?")
        #expect(torn.output.contains("exit=0"), "\(torn.output)")
        status = try audio(vm)
        #expect(status["bad-requests"]?.int64Value == 5, "\(JSONWriter.string(status))")
        // The next stream plays, whole, to a client.
        try expectToneReachesClient(vm, uri: uri, file: "\(work)/after-hostile.raw")

        // 3. A descriptor chain that loops: only the sound device breaks; reloading the driver resets it.
        _ = try vm.cli(["audio", vm.name, "--debug-corrupt", "chain"])
        try vm.guestShell("aplay -q /tmp/tone1k.wav")
        #expect(vm.up.waitForLine(containing: "\"event\": \"audio-broken\"", timeout: 60) != nil, "\(vm.up.transcript)")
        #expect(try vm.cli(["ping", vm.name]).status == 0, "the agent still answers")
        // aplay may hang on the broken device until the driver goes: kill it, then reload.
        let reload = try vm.guestRun("killall -9 aplay; sleep 1; rmmod virtio_snd && insmod /lib/modules/virtio_snd.ko && echo reloaded")
        #expect(reload.output.contains("reloaded"), "\(reload.output)")
        status = try audio(vm)
        #expect(status["broken"] == nil, "\(JSONWriter.string(status))")
        try expectToneReachesClient(vm, uri: uri, file: "\(work)/after-reset.raw")

        _ = try vm.cli(["down", vm.name])
        #expect(vm.upExitCode() == 0)
    }

    /// The guest plays /tmp/tone1k.wav; a spice-gtk client hears 1 kHz at the guest's level.
    func expectToneReachesClient(_ vm: BootedVM, uri: String, file: String) throws {
        let client = try Self.listen(uri, into: file, seconds: 60)
        #expect(client.waitForLine(containing: "connected", timeout: 30) != nil, "\(client.transcript)")
        let played = try vm.guestRun("aplay -q /tmp/tone1k.wav 2>&1; echo exit=$?")
        #expect(played.output.contains("exit=0"), "\(played.output)")
        #expect(client.waitForLine(containing: "stop", timeout: 30) != nil, "\(client.transcript)")
        client.signal(SIGINT)
        _ = client.waitForExit(timeout: 10)
        let heard = try Self.analyse(file, raw: true)
        #expect(abs(heard.hz - 1000) <= 5 && abs(heard.db - Self.guestLevel) <= 1 && heard.seconds >= 1.2, "heard \(heard)")
    }
}
