/// Wire constants and layouts of virtio-snd (virtio spec 1.2 §5.14; Linux
/// include/uapi/linux/virtio_snd.h). Every field is little-endian.
public enum VirtioSound {
    /// Queues (§5.14.2).
    public static let controlQueue = 0
    public static let eventQueue = 1
    public static let txQueue = 2
    public static let rxQueue = 3

    /// struct virtio_snd_config: jacks, streams, chmaps (le32 each). The controls
    /// field exists only with VIRTIO_SND_F_CTLS, which we do not offer.
    public static let configSize = 12

    /// Request codes (§5.14.6).
    public enum Request {
        public static let jackInfo: UInt32 = 1
        public static let jackRemap: UInt32 = 2
        public static let pcmInfo: UInt32 = 0x0100
        public static let pcmSetParams: UInt32 = 0x0101
        public static let pcmPrepare: UInt32 = 0x0102
        public static let pcmRelease: UInt32 = 0x0103
        public static let pcmStart: UInt32 = 0x0104
        public static let pcmStop: UInt32 = 0x0105
        public static let chmapInfo: UInt32 = 0x0200
    }

    /// Status codes of a response or a transfer.
    public enum Status {
        public static let ok: UInt32 = 0x8000
        public static let badMessage: UInt32 = 0x8001
        public static let notSupported: UInt32 = 0x8002
        public static let ioError: UInt32 = 0x8003
    }

    /// Event codes (on the event queue).
    public enum Event {
        public static let pcmPeriodElapsed: UInt32 = 0x1100
        public static let pcmXrun: UInt32 = 0x1101
    }

    /// Stream and chmap directions.
    public enum Direction: UInt8, Sendable {
        case output = 0
        case input = 1
    }

    /// struct virtio_snd_hdr.
    public static let headerSize = 4
    /// struct virtio_snd_query_info: hdr, start_id, count, size.
    public static let queryInfoSize = 16
    /// struct virtio_snd_pcm_hdr: hdr, stream_id.
    public static let pcmHeaderSize = 8
    /// struct virtio_snd_pcm_set_params: pcm_hdr, buffer_bytes, period_bytes, features, channels, format, rate, padding.
    public static let setParamsSize = 24
    /// struct virtio_snd_pcm_info: hda_fn_nid, features, formats (le64), rates (le64),
    /// direction, channels_min, channels_max, padding[5].
    public static let pcmInfoSize = 32
    /// struct virtio_snd_chmap_info: hda_fn_nid, direction, channels, positions[18].
    public static let chmapInfoSize = 24
    /// VIRTIO_SND_CHMAP_MAX_SIZE.
    public static let chmapMaxPositions = 18
    /// struct virtio_snd_pcm_xfer: stream_id.
    public static let xferHeaderSize = 4
    /// struct virtio_snd_pcm_status: status, latency_bytes.
    public static let pcmStatusSize = 8
    /// struct virtio_snd_event: hdr, data.
    public static let eventSize = 8

    /// Channel positions (VIRTIO_SND_CHMAP_*).
    public enum Position {
        public static let mono: UInt8 = 2
        public static let frontLeft: UInt8 = 3
        public static let frontRight: UInt8 = 4
    }
}

/// A PCM sample format we offer (VIRTIO_SND_PCM_FMT_*: the value is the bit in
/// virtio_snd_pcm_info.formats and the byte in set_params).
public enum PCMFormat: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    case s16 = 5
    case s32 = 17
    case float = 19

    public var bytesPerSample: Int {
        switch self {
        case .s16: return 2
        case .s32, .float: return 4
        }
    }

    public var description: String {
        switch self {
        case .s16: return "S16_LE"
        case .s32: return "S32_LE"
        case .float: return "FLOAT_LE"
        }
    }

    public static var offeredMask: UInt64 { allCases.reduce(0) { $0 | 1 << UInt64($1.rawValue) } }
}

/// The frame rates we offer (VIRTIO_SND_PCM_RATE_*: the value is the bit in
/// virtio_snd_pcm_info.rates and the byte in set_params).
public enum PCMRate: UInt8, Sendable, CaseIterable {
    case r8000 = 1
    case r11025 = 2
    case r16000 = 3
    case r22050 = 4
    case r32000 = 5
    case r44100 = 6
    case r48000 = 7
    case r64000 = 8
    case r88200 = 9
    case r96000 = 10

    public var hertz: Int {
        switch self {
        case .r8000: return 8000
        case .r11025: return 11025
        case .r16000: return 16000
        case .r22050: return 22050
        case .r32000: return 32000
        case .r44100: return 44100
        case .r48000: return 48000
        case .r64000: return 64000
        case .r88200: return 88200
        case .r96000: return 96000
        }
    }

    public static var offeredMask: UInt64 { allCases.reduce(0) { $0 | 1 << UInt64($1.rawValue) } }
}
