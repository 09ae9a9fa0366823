/// VD_AGENT_AUDIO_VOLUME_SYNC (client -> agent): the client's volume and mute
/// for playback or record, which the guest is to follow (spice-vdagent sets
/// the guest's mixer from it). Layout (spice-protocol vd_agent.h,
/// VDAgentAudioVolumeSync): is_playback u8, mute u8, nchannels u8, then
/// nchannels little-endian u16 volumes (0 ... 65535), unaligned.
public struct VDAgentAudioVolume: Sendable, Equatable {
    public var isPlayback: Bool
    public var mute: Bool
    public var volumes: [UInt16]

    public init(isPlayback: Bool, mute: Bool, volumes: [UInt16]) {
        self.isPlayback = isPlayback
        self.mute = mute
        self.volumes = volumes
    }

    /// More channels than any client sends is not a volume message.
    public static let maxChannels = 32

    /// nil when the payload is too short for the channels it declares, or declares none or too many.
    public init?(payload: [UInt8]) {
        guard payload.count >= 3 else { return nil }
        let n = Int(payload[2])
        guard (1...Self.maxChannels).contains(n), payload.count >= 3 + 2 * n else { return nil }
        isPlayback = payload[0] != 0
        mute = payload[1] != 0
        let fields = LEReader(payload[...])
        volumes = (0..<n).map { fields.u16(3 + 2 * $0)! }
    }

    public var encoded: [UInt8] {
        var out: [UInt8] = [isPlayback ? 1 : 0, mute ? 1 : 0, UInt8(volumes.count)]
        for v in volumes { out.appendLE(v) }
        return out
    }
}
