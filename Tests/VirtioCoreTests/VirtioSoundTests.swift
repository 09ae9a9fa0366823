import Glibc
import Testing
@testable import VirtioCore
@testable import VirtioSound

/// One split ring of the test's guest driver, at its own addresses in region 0;
/// buffers live in region 1, handed out by `TestSoundDriver`.
final class DriverRing {
    let index: Int
    let base: UInt64
    let size = 16
    let guest: TestGuest
    private(set) var avail: UInt16 = 0
    private var nextDescriptor = 0
    let queue: SplitVirtqueue

    init(index: Int, guest: TestGuest) throws {
        self.index = index
        self.guest = guest
        base = 0x1000 + UInt64(index) * 0x3000
        queue = try SplitVirtqueue(index: index, size: size, descriptorTable: GuestAddress(base),
                                   availRing: GuestAddress(base + 0x1000), usedRing: GuestAddress(base + 0x2000),
                                   memory: guest.memory, eventIndex: false, indirectDescriptors: false)
    }

    /// Makes a chain of (address, length, writable) buffers available; returns its head.
    @discardableResult
    func offer(_ buffers: [(UInt64, Int, Bool)]) -> UInt16 {
        let head = nextDescriptor % size
        for (i, b) in buffers.enumerated() {
            let d = UInt64((head + i) % size)
            let at = base + 16 * d
            guest.put(b.0, at: at)
            guest.put(UInt32(b.1), at: at + 8)
            let more = i + 1 < buffers.count
            guest.put(UInt16((more ? 1 : 0) | (b.2 ? 2 : 0)), at: at + 12)
            guest.put(UInt16((head + i + 1) % size), at: at + 14)
        }
        nextDescriptor += buffers.count
        guest.put(UInt16(head), at: base + 0x1000 + 4 + 2 * UInt64(Int(avail) % size))
        avail &+= 1
        guest.put(avail, at: base + 0x1000 + 2)
        return UInt16(head)
    }

    var usedIndex: UInt16 { guest.get(UInt16.self, at: base + 0x2000 + 2) }
    func used(_ slot: Int) -> (id: UInt32, len: UInt32) {
        let at = base + 0x2000 + 4 + 8 * UInt64(slot % size)
        return (guest.get(UInt32.self, at: at), guest.get(UInt32.self, at: at + 4))
    }
}

/// Records what the device plays and supplies what it captures.
final class RecordingSoundHost: VirtioSoundHost {
    var played: [Int16] = []
    var changes: [(VirtioSound.Direction, Bool)] = []
    var microphone: (Int) -> [Int16] = { frames in Array(repeating: 1000, count: frames * 2) }
    func streamChanged(direction: VirtioSound.Direction, running: Bool) { changes.append((direction, running)) }
    func play(_ samples: [Int16]) { played += samples }
    func capture(frames: Int) -> [Int16] { microphone(frames) }
}

/// A guest driver of the test's making for the virtio-snd device: control,
/// tx and rx rings in shared memory, and a clock the test moves.
final class TestSoundDriver {
    let guest: TestGuest
    let queues = TestQueues()
    let device = VirtioSoundDevice()
    let host = RecordingSoundHost()
    let control: DriverRing
    let tx: DriverRing
    let rx: DriverRing
    var now: UInt64 = 1000
    private var nextBuffer: UInt64 = 0x10_0000

    init() throws {
        guest = try TestGuest()
        control = try DriverRing(index: 0, guest: guest)
        tx = try DriverRing(index: 2, guest: guest)
        rx = try DriverRing(index: 3, guest: guest)
        queues.queues = [0: control.queue, 2: tx.queue, 3: rx.queue]
        device.attach(queues)
        device.host = host
        device.clock = { [unowned self] in self.now }
    }

    /// A fresh buffer in region 1 (the test never needs more than 512 KiB in all).
    func buffer(_ bytes: Int) -> UInt64 {
        let at = nextBuffer
        nextBuffer += UInt64((bytes + 15) & ~15)
        precondition(nextBuffer <= 0x18_0000, "test buffers exhausted")
        return at
    }

    func request(_ bytes: [UInt8], responseSize: Int = 4) -> [UInt8] {
        let req = buffer(bytes.count), resp = buffer(responseSize)
        guest.putBytes(bytes, at: req)
        control.offer([(req, bytes.count, false), (resp, responseSize, true)])
        device.queueNotified(VirtioSound.controlQueue)
        let used = control.used(Int(control.usedIndex) - 1)
        return guest.getBytes(at: resp, count: Int(used.len))
    }

    static func u32s(_ values: [UInt32]) -> [UInt8] {
        var b: [UInt8] = []
        for v in values { b.appendLE(v) }
        return b
    }

    func status(_ bytes: [UInt8]) -> UInt32 { bytes.count >= 4 ? WireReader(bytes: bytes).u32(0) : 0 }

    func pcm(_ code: UInt32, stream: UInt32) -> UInt32 { status(request(Self.u32s([code, stream]))) }

    func setParams(stream: UInt32, buffer: UInt32, period: UInt32, channels: UInt8 = 2, format: UInt8 = PCMFormat.s16.rawValue,
                   rate: UInt8 = PCMRate.r48000.rawValue, features: UInt32 = 0) -> UInt32
    {
        status(request(Self.u32s([VirtioSound.Request.pcmSetParams, stream, buffer, period, features]) + [channels, format, rate, 0]))
    }

    /// Queues one playback period; returns where its status lands.
    @discardableResult
    func play(_ data: [UInt8], stream: UInt32 = 0) -> UInt64 {
        let hdr = buffer(4), d = buffer(data.count), st = buffer(8)
        guest.putBytes(Self.u32s([stream]), at: hdr)
        guest.putBytes(data, at: d)
        tx.offer([(hdr, 4, false), (d, data.count, false), (st, 8, true)])
        device.queueNotified(VirtioSound.txQueue)
        return st
    }

    /// Queues one capture period; returns where its data and status land.
    func capture(bytes: Int, stream: UInt32 = 1) -> (data: UInt64, status: UInt64) {
        let hdr = buffer(4), d = buffer(bytes), st = buffer(8)
        guest.putBytes(Self.u32s([stream]), at: hdr)
        rx.offer([(hdr, 4, false), (d, bytes, true), (st, 8, true)])
        device.queueNotified(VirtioSound.rxQueue)
        return (d, st)
    }

    func advance(ms: UInt64) {
        now += ms
        device.tick(now: now)
    }
}

@Suite struct VirtioSoundTests {
    static let ok = VirtioSound.Status.ok
    static let bad = VirtioSound.Status.badMessage
    static let notSupported = VirtioSound.Status.notSupported

    @Test func configAndStreamInfo() throws {
        let d = try TestSoundDriver()
        #expect(d.device.configSize == 12)
        #expect(d.device.readConfig(offset: 0, count: 12) == TestSoundDriver.u32s([0, 2, 0]))
        let info = d.request(TestSoundDriver.u32s([VirtioSound.Request.pcmInfo, 0, 2, 32]), responseSize: 4 + 64)
        #expect(info.count == 68)
        #expect(WireReader(bytes: info).u32(0) == Self.ok)
        for (i, direction) in [(0, UInt8(0)), (1, UInt8(1))] {
            let entry = Array(info[(4 + 32 * i)..<(4 + 32 * (i + 1))])
            var formats: UInt64 = 0, rates: UInt64 = 0
            for b in 0..<8 {
                formats |= UInt64(entry[8 + b]) << (8 * b)
                rates |= UInt64(entry[16 + b]) << (8 * b)
            }
            #expect(formats == 1 << 5 | 1 << 17 | 1 << 19)  // S16, S32, FLOAT
            #expect(rates == 0b111_1111_1110)  // 8000 ... 96000
            #expect(Array(entry[24...26]) == [direction, 1, 2])
            #expect(entry[27...].allSatisfy { $0 == 0 })
        }
    }

    @Test func badControlRequestsGetErrorStatuses() throws {
        let d = try TestSoundDriver()
        let u = TestSoundDriver.u32s
        #expect(d.status(d.request([1, 0])) == Self.bad)  // shorter than a header
        #expect(d.status(d.request(u([0x0999]))) == Self.notSupported)
        #expect(d.status(d.request(u([VirtioSound.Request.pcmInfo, 1, 2, 32]), responseSize: 68)) == Self.bad)  // past the end
        #expect(d.status(d.request(u([VirtioSound.Request.pcmInfo, 0, 2, 32]), responseSize: 20)) == Self.bad)  // no room
        #expect(d.status(d.request(u([VirtioSound.Request.pcmInfo, 0, 1, 8]), responseSize: 68)) == Self.bad)  // item too small
        #expect(d.status(d.request(u([VirtioSound.Request.jackInfo, 0, 1, 24]), responseSize: 28)) == Self.bad)  // no jacks
        #expect(d.status(d.request(u([VirtioSound.Request.jackRemap, 0, 0, 0]))) == Self.notSupported)
        #expect(d.status(d.request(u([VirtioSound.Request.pcmSetParams, 0]))) == Self.bad)  // truncated
        #expect(d.setParams(stream: 2, buffer: 3840, period: 1920) == Self.bad)
        #expect(d.setParams(stream: 0, buffer: 3840, period: 1920, format: 0) == Self.notSupported)  // IMA ADPCM
        #expect(d.setParams(stream: 0, buffer: 3840, period: 1920, rate: 13) == Self.notSupported)  // 384 kHz
        #expect(d.setParams(stream: 0, buffer: 3840, period: 1920, channels: 3) == Self.notSupported)
        #expect(d.setParams(stream: 0, buffer: 3840, period: 1921) == Self.bad)  // not whole frames
        #expect(d.setParams(stream: 0, buffer: 1920, period: 3840) == Self.bad)  // period over buffer
        #expect(d.setParams(stream: 0, buffer: 64 << 20, period: 3840) == Self.bad)
        #expect(d.setParams(stream: 0, buffer: 3840, period: 1920, features: 1 << 2) == Self.notSupported)
        #expect(d.pcm(VirtioSound.Request.pcmStart, stream: 0) == Self.bad)  // nothing set up
        #expect(d.pcm(VirtioSound.Request.pcmPrepare, stream: 0) == Self.bad)
        #expect(d.pcm(VirtioSound.Request.pcmStop, stream: 1) == Self.bad)
        #expect(d.pcm(VirtioSound.Request.pcmRelease, stream: 9) == Self.bad)
        #expect(d.device.badRequests == 20)
        // After all that, the stream works.
        #expect(d.setParams(stream: 0, buffer: 3840, period: 1920) == Self.ok)
        #expect(d.pcm(VirtioSound.Request.pcmPrepare, stream: 0) == Self.ok)
        #expect(d.pcm(VirtioSound.Request.pcmStart, stream: 0) == Self.ok)
        #expect(d.pcm(VirtioSound.Request.pcmSetParams, stream: 0) == Self.bad)  // while running (and short)
    }

    /// 48 kHz S16 stereo: 10 ms periods are returned at the real rate, bit-exact to the host.
    @Test func playbackIsPacedByTheClockAndBitExact() throws {
        let d = try TestSoundDriver()
        #expect(d.setParams(stream: 0, buffer: 9600, period: 1920) == Self.ok)
        #expect(d.pcm(VirtioSound.Request.pcmPrepare, stream: 0) == Self.ok)
        var sent: [Int16] = []
        var statuses: [UInt64] = []
        for p in 0..<5 {
            let samples = (0..<960).map { Int16(truncatingIfNeeded: p * 1000 + $0 * 7 - 3000) }
            sent += samples
            var bytes: [UInt8] = []
            for s in samples { bytes.appendLE(s) }
            statuses.append(d.play(bytes))  // the guest's pre-fill, before START
        }
        d.advance(ms: 50)
        #expect(d.tx.usedIndex == 0, "nothing plays before START")
        #expect(d.pcm(VirtioSound.Request.pcmStart, stream: 0) == Self.ok)
        #expect(d.device.needsTicks)
        // START plays the first 10 ms at once (the device runs one frame ahead).
        #expect(d.host.played.count == 960)
        #expect(d.tx.usedIndex == 1)
        #expect(d.tx.used(0).len == 8)
        #expect(d.guest.get(UInt32.self, at: statuses[0]) == Self.ok)
        d.advance(ms: 5)
        #expect(d.host.played.count == 1440)  // 720 frames
        #expect(d.tx.usedIndex == 1)
        d.advance(ms: 5)
        #expect(d.tx.usedIndex == 2)
        d.advance(ms: 30)
        #expect(d.tx.usedIndex == 5)
        #expect(d.host.played == sent)
        #expect(d.device.streamStatus[0].underruns == 0)
        d.advance(ms: 10)
        d.advance(ms: 10)
        #expect(d.device.streamStatus[0].underruns == 0, "running dry is not yet an underrun (it may be the end)")
        d.play([UInt8](repeating: 0, count: 1920))
        d.advance(ms: 10)
        d.play([UInt8](repeating: 0, count: 1920))
        d.advance(ms: 10)
        #expect(d.tx.usedIndex == 7)
        #expect(d.device.streamStatus[0].underruns == 1, "data after a dry spell: one underrun, counted once")
        #expect(d.pcm(VirtioSound.Request.pcmStop, stream: 0) == Self.ok)
        #expect(!d.device.needsTicks)
        #expect(d.pcm(VirtioSound.Request.pcmRelease, stream: 0) == Self.ok)
        #expect(d.host.changes.map(\.1) == [true, false])
    }

    @Test func releaseReturnsEveryHeldBuffer() throws {
        let d = try TestSoundDriver()
        #expect(d.setParams(stream: 0, buffer: 7680, period: 1920) == Self.ok)
        #expect(d.pcm(VirtioSound.Request.pcmPrepare, stream: 0) == Self.ok)
        for _ in 0..<4 { d.play([UInt8](repeating: 1, count: 1920)) }
        #expect(d.pcm(VirtioSound.Request.pcmStart, stream: 0) == Self.ok)
        #expect(d.tx.usedIndex == 1)
        #expect(d.pcm(VirtioSound.Request.pcmStop, stream: 0) == Self.ok)
        #expect(d.tx.usedIndex == 1, "STOP keeps the buffers")
        #expect(d.pcm(VirtioSound.Request.pcmRelease, stream: 0) == Self.ok)
        #expect(d.tx.usedIndex == 4, "RELEASE returns the other three before it answers")
        #expect(d.device.streamStatus[0].queuedBytes == 0)
    }

    /// 16 kHz mono capture from the host's 48 kHz stereo: buffers fill at the real rate.
    @Test func captureFillsBuffersAtTheRealRate() throws {
        let d = try TestSoundDriver()
        #expect(d.setParams(stream: 1, buffer: 1280, period: 320, channels: 1, rate: PCMRate.r16000.rawValue) == Self.ok)
        #expect(d.pcm(VirtioSound.Request.pcmPrepare, stream: 1) == Self.ok)
        let first = d.capture(bytes: 320)
        _ = d.capture(bytes: 320)
        #expect(d.pcm(VirtioSound.Request.pcmStart, stream: 1) == Self.ok)
        d.advance(ms: 5)
        #expect(d.rx.usedIndex == 0)
        d.advance(ms: 6)
        #expect(d.rx.usedIndex == 1)
        #expect(d.rx.used(0).len == 328, "data + status")
        #expect(d.guest.get(UInt32.self, at: first.status) == Self.ok)
        let samples = (0..<160).map { d.guest.get(Int16.self, at: first.data + 2 * UInt64($0)) }
        #expect(samples.dropFirst().allSatisfy { $0 == 1000 }, "\(samples.prefix(4))")
        // The microphone goes quiet (a client that has not sent yet): silence, still on time.
        d.host.microphone = { _ in [] }
        d.advance(ms: 10)
        #expect(d.rx.usedIndex == 2)
        #expect(d.device.streamStatus[1].underruns == 0)
    }

    @Test func badTransfersComeBackWithBadMessage() throws {
        let d = try TestSoundDriver()
        let early = d.play([UInt8](repeating: 0, count: 1920))  // no parameters yet
        #expect(d.tx.usedIndex == 1)
        #expect(d.guest.get(UInt32.self, at: early) == Self.bad)
        #expect(d.setParams(stream: 0, buffer: 3840, period: 1920) == Self.ok)
        #expect(d.pcm(VirtioSound.Request.pcmPrepare, stream: 0) == Self.ok)
        let wrongStream = d.play([UInt8](repeating: 0, count: 1920), stream: 1)
        #expect(d.guest.get(UInt32.self, at: wrongStream) == Self.bad)
        let torn = d.play([UInt8](repeating: 0, count: 1918))
        #expect(d.guest.get(UInt32.self, at: torn) == Self.bad)
        #expect(d.tx.usedIndex == 3)
        // And a good one plays.
        d.play([UInt8](repeating: 0, count: 1920))
        #expect(d.pcm(VirtioSound.Request.pcmStart, stream: 0) == Self.ok)
        #expect(d.tx.usedIndex == 4)
    }

    @Test func resamplingKeepsTheFrequency() {
        // 1 kHz at 44.1 kHz -> 48 kHz: 1000 cycles a second either way.
        var r = LinearResampler(inputRate: 44100, outputRate: 48000, channels: 1)
        var out: [Float] = []
        for block in 0..<10 {
            let input = (0..<4410).map { i in Float(sin(2 * Double.pi * 1000 * Double(block * 4410 + i) / 44100)) }
            out += r.process(input)
        }
        #expect(abs(out.count - 48000) <= 2)
        let crossings = zip(out, out.dropFirst()).filter { $0 < 0 && $1 >= 0 }.count
        #expect(abs(crossings - 1000) <= 1)
        #expect(abs((out.map { $0 * $0 }.reduce(0, +) / Float(out.count)).squareRoot() - 0.7071) < 0.01)
    }

    @Test func formatsConvertToTheHostsStereo() {
        var mono = StreamConverter(params: PCMParameters(direction: .output, format: .float, rate: .r48000, channels: 1,
                                                         bufferBytes: 4096, periodBytes: 1024))
        var bytes: [UInt8] = []
        for v: Float in [0.5, -0.25, .nan, 9] { bytes.appendLE(v.bitPattern) }
        #expect(mono.toHost(bytes[...]) == [16384, 16384, -8192, -8192, 0, 0, 32767, 32767])
        var s32 = StreamConverter(params: PCMParameters(direction: .input, format: .s32, rate: .r48000, channels: 2,
                                                        bufferBytes: 4096, periodBytes: 1024))
        let back = s32.toGuest([16384, -16384])
        #expect(back == TestSoundDriver.u32s([0x4000_0000, 0xC000_0000]))
    }
}

extension VirtioSoundTests {
    /// The host format itself is copied, not converted: the same as the general path's result.
    @Test func hostFormatPassesThroughUnchanged() {
        let params = PCMParameters(direction: .output, format: .s16, rate: .r48000, channels: 2, bufferBytes: 4096, periodBytes: 1024)
        var fast = StreamConverter(params: params)
        #expect(fast.isHostFormat)
        let samples: [Int16] = [0, 1, -1, 32767, -32768, 12345, -2, 7]
        var bytes: [UInt8] = [0xAA, 0xBB]  // an odd start, as a slice of a larger buffer may have
        for v in samples { bytes.appendLE(v) }
        #expect(fast.toHost(bytes[2...]) == samples)
        var capture = StreamConverter(params: PCMParameters(direction: .input, format: .s16, rate: .r48000, channels: 2,
                                                            bufferBytes: 4096, periodBytes: 1024))
        #expect(capture.toGuest(samples) == Array(bytes[2...]))
    }
}
