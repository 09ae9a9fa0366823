/// Our guest agent's notices to hostvmm (protocol.md §1.9), carried on the
/// SPICE agent port because QGA has no unsolicited messages (a host parsing
/// qemu-ga replies, Proxmox for one, must never see an extra line).
///
/// A notice is a VDAgent message on the server port (2) with a private type
/// and a JSON object as payload. spice-server discards whatever an agent
/// writes to the server port; hostvmm's bridge takes ours out before that
/// (GuestStreamFilter), so no SPICE peer ever sees one.
public enum HostNotice {
    /// "HVMN" read as a little-endian u32: far from spice's types (1...16).
    public static let messageType: UInt32 = 0x4E4D_5648
    /// A notice is a small JSON object; anything larger is not one of ours.
    public static let maxPayload = 64 << 10

    /// The bytes the guest agent writes: one chunk on the server port.
    public static func encode(json: [UInt8]) -> [UInt8] {
        VDAgentWriter.chunks(VDAgentWriter.message(rawType: messageType, json), port: .server)
    }
}
