/// The one PCM format of the host side: what SPICE's playback and record
/// channels carry (spice.md §6) and what hostvmm opens PulseAudio streams with.
/// Interleaved signed 16-bit stereo at 48 kHz; guest streams are converted to
/// and from it.
public enum HostPCM {
    public static let rate = 48000
    public static let channels = 2
    public static let bytesPerFrame = 4
}

/// Guest bytes <-> floats in -1...1, interleaved. S16 round-trips exactly
/// (one scale of 32768 both ways), so a 48 kHz S16 stereo guest stream
/// reaches the host bit for bit.
enum SampleCodec {
    static func decode(_ bytes: ArraySlice<UInt8>, format: PCMFormat) -> [Float] {
        var out: [Float] = []
        out.reserveCapacity(bytes.count / format.bytesPerSample)
        bytes.withUnsafeBytes { raw in
            switch format {
            case .s16:
                for i in stride(from: 0, to: raw.count - 1, by: 2) {
                    out.append(Float(Int16(littleEndian: raw.loadUnaligned(fromByteOffset: i, as: Int16.self))) / 32768)
                }
            case .s32:
                for i in stride(from: 0, to: raw.count - 3, by: 4) {
                    out.append(Float(Int32(littleEndian: raw.loadUnaligned(fromByteOffset: i, as: Int32.self))) / 2_147_483_648)
                }
            case .float:
                for i in stride(from: 0, to: raw.count - 3, by: 4) {
                    let v = Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: i, as: UInt32.self)))
                    out.append(v.isFinite ? min(1, max(-1, v)) : 0)  // a guest may write anything
                }
            }
        }
        return out
    }

    static func encode(_ samples: [Float], format: PCMFormat, into out: inout [UInt8]) {
        out.reserveCapacity(out.count + samples.count * format.bytesPerSample)
        for s in samples {
            switch format {
            case .s16: out.appendLE(int16(s))
            case .s32: out.appendLE(Int32(max(-2_147_483_648, min(2_147_483_647, (Double(s) * 2_147_483_648).rounded()))))
            case .float: out.appendLE(s.bitPattern)
            }
        }
    }

    static func int16(_ s: Float) -> Int16 { Int16(max(-32768, min(32767, (s * 32768).rounded()))) }
}

/// Linear-interpolation rate conversion of an interleaved stream, kept across
/// blocks (the last input frame and the fractional position carry over).
/// Plenty for speech and test tones; equal rates pass through untouched.
struct LinearResampler {
    let inputRate: Int
    let outputRate: Int
    let channels: Int
    /// Position of the next output frame, in input frames, relative to the block
    /// being processed; -1 is `previous`, the last frame of the block before.
    private var position: Double = 0
    private var previous: [Float]

    init(inputRate: Int, outputRate: Int, channels: Int) {
        self.inputRate = inputRate
        self.outputRate = outputRate
        self.channels = channels
        previous = Array(repeating: 0, count: channels)
    }

    mutating func process(_ input: [Float]) -> [Float] {
        if inputRate == outputRate { return input }
        let frames = input.count / channels
        guard frames > 0 else { return [] }
        let step = Double(inputRate) / Double(outputRate)
        var out: [Float] = []
        out.reserveCapacity(Int(Double(frames) / step) * channels + channels)
        while position < Double(frames - 1) {
            let i = Int(position.rounded(.down))
            let frac = Float(position - Double(i))
            for c in 0..<channels {
                let a = i < 0 ? previous[c] : input[i * channels + c]
                let b = input[(i + 1) * channels + c]
                out.append(a + (b - a) * frac)
            }
            position += step
        }
        position -= Double(frames)
        previous = Array(input[((frames - 1) * channels)..<(frames * channels)])
        return out
    }
}

/// Channel layouts between a guest stream (1 or 2 channels) and the host's stereo.
enum ChannelMap {
    static func toStereo(_ samples: [Float], channels: Int) -> [Float] {
        switch channels {
        case 2: return samples
        case 1: return samples.flatMap { [$0, $0] }
        default:
            let frames = samples.count / channels
            return (0..<frames).flatMap { [samples[$0 * channels], samples[$0 * channels + 1]] }
        }
    }

    static func fromStereo(_ samples: [Float], channels: Int) -> [Float] {
        switch channels {
        case 2: return samples
        case 1: return stride(from: 0, to: samples.count - 1, by: 2).map { (samples[$0] + samples[$0 + 1]) / 2 }
        default:
            return stride(from: 0, to: samples.count - 1, by: 2).flatMap {
                [samples[$0], samples[$0 + 1]] + Array(repeating: Float(0), count: channels - 2)
            }
        }
    }
}

/// One guest stream's conversion: guest PCM -> host PCM (playback) or host -> guest (capture).
struct StreamConverter {
    let params: PCMParameters
    private var resampler: LinearResampler

    init(params: PCMParameters) {
        self.params = params
        switch params.direction {
        case .output:
            resampler = LinearResampler(inputRate: params.rate.hertz, outputRate: HostPCM.rate, channels: HostPCM.channels)
        case .input:
            resampler = LinearResampler(inputRate: HostPCM.rate, outputRate: params.rate.hertz, channels: HostPCM.channels)
        }
    }

    /// The guest's stream is already the host format: bytes are copied, not converted.
    var isHostFormat: Bool { params.format == .s16 && params.rate.hertz == HostPCM.rate && params.channels == HostPCM.channels }

    /// Guest bytes (whole frames) -> host S16 stereo samples.
    mutating func toHost(_ bytes: ArraySlice<UInt8>) -> [Int16] {
        if isHostFormat {
            // One copy (the host is little-endian, as the wire: Linux on x86-64 and arm64).
            var out = [Int16](repeating: 0, count: bytes.count / 2)
            out.withUnsafeMutableBytes { dst in
                bytes.withUnsafeBytes { src in dst.copyMemory(from: UnsafeRawBufferPointer(rebasing: src[..<dst.count])) }
            }
            return out
        }
        let stereo = ChannelMap.toStereo(SampleCodec.decode(bytes, format: params.format), channels: params.channels)
        return resampler.process(stereo).map(SampleCodec.int16)
    }

    /// Host S16 stereo samples -> guest bytes (whole frames).
    mutating func toGuest(_ samples: [Int16]) -> [UInt8] {
        if isHostFormat {
            return samples.withUnsafeBytes { Array($0) }
        }
        let stereo = resampler.process(samples.map { Float($0) / 32768 })
        var out: [UInt8] = []
        SampleCodec.encode(ChannelMap.fromStereo(stereo, channels: params.channels), format: params.format, into: &out)
        return out
    }
}
