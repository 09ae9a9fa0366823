/// Virtio feature bits the transport-independent core knows (virtio spec §6).
public enum VirtioFeature {
    public static let indirectDescriptors: UInt64 = 1 << 28  // VIRTIO_F_INDIRECT_DESC
    public static let eventIndex: UInt64 = 1 << 29  // VIRTIO_F_RING_EVENT_IDX
    public static let version1: UInt64 = 1 << 32  // VIRTIO_F_VERSION_1
}

/// What a virtio device implements to run behind `VhostUserBackend` (or any
/// other transport later): the device never sees sockets, eventfds or the
/// memory table, only queues.
///
/// Threading: every method is called on the thread that runs the backend
/// (hostvmm's event loop), and a device calls back into `VirtioQueueAccess`
/// only on that thread.
public protocol VirtioDeviceBackend: AnyObject {
    /// Device-specific feature bits; the backend adds VERSION_1, EVENT_IDX and INDIRECT_DESC.
    var deviceFeatures: UInt64 { get }
    var queueCount: Int { get }
    /// The size of the device's config space in bytes.
    var configSize: Int { get }
    /// The largest chain (in bytes) the device accepts on any queue.
    var maxChainBytes: UInt64 { get }

    /// The backend gives the device its queues once, before any other call.
    func attach(_ queues: VirtioQueueAccess)
    /// `count` bytes of config space from `offset`; offset + count <= configSize (checked by the caller).
    func readConfig(offset: Int, count: Int) -> [UInt8]
    /// The driver wrote config space. The device ignores writes to read-only fields.
    func writeConfig(offset: Int, bytes: [UInt8])
    /// The driver made buffers available on queue `index` (a kick), or the ring just started.
    func queueNotified(_ index: Int)
    /// Forget all device state (device reset, frontend gone). Queues are already stopped.
    func reset()
}

extension VirtioDeviceBackend {
    public var maxChainBytes: UInt64 { SplitVirtqueue.defaultMaxChainBytes }
}

/// The transport's side, as a device sees it.
public protocol VirtioQueueAccess: AnyObject {
    /// Queue `index` if it is started and the device is not broken; nil otherwise.
    func queue(_ index: Int) -> SplitVirtqueue?
    /// Whether the driver enabled queue `index` (vhost-user SET_VRING_ENABLE). A started
    /// but disabled queue must be processed without side effects.
    func isEnabled(_ index: Int) -> Bool
    /// After pushing: signals the driver if the queue asks for it, and reports a queue
    /// that became broken (the whole device then stops until reset).
    func notify(_ index: Int)
}
