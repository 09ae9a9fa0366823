import AgentProtocol
import Foundation

/// The memory balloon (protocols.md §6, §2.2): set the guest's memory target,
/// read the actual size and the guest's statistics. Guest RAM is a shared
/// memfd, so QEMU punches holes for inflated and reported pages and the host
/// really gets the memory back.
extension VirtualMachine {
    /// Below this a Linux guest starts failing in ways a person would not connect to the balloon.
    public static let balloonFloorBytes: UInt64 = 64 << 20

    static let balloonPath = "/machine/peripheral/\(QEMUCommandLine.balloonID)"

    /// Stats QEMU reports, with the names `hostvmm balloon` prints.
    static let balloonStats: [(qom: String, name: String)] = [
        ("stat-free-memory", "free"), ("stat-available-memory", "available"), ("stat-disk-caches", "cache"),
        ("stat-total-memory", "total"), ("stat-swap-in", "swap-in"), ("stat-swap-out", "swap-out"),
        ("stat-major-faults", "major-faults"), ("stat-minor-faults", "minor-faults"),
        ("stat-oom-kills", "oom-kills"),
    ]

    /// Sets the target after checking it and that the guest has a balloon driver.
    func setBalloon(bytes: Int64, completion: @escaping (Result<JSONValue, ControlError>) -> Void) {
        let ram = config.memoryBytes
        guard bytes > 0, UInt64(bytes) <= ram else {
            return completion(.failure(.generic(
                "balloon target \(ByteCount(bytes)) is above the VM's memory (\(ByteCount(Int64(ram))))")))
        }
        guard UInt64(bytes) >= Self.balloonFloorBytes else {
            return completion(.failure(.generic(
                "balloon target \(ByteCount(bytes)) is below the safe floor of \(ByteCount(Int64(Self.balloonFloorBytes)))")))
        }
        guard let qmp else { return completion(.failure(.generic("QEMU monitor not connected"))) }
        balloonDriverActive { [weak self] active in
            guard let self else { return }
            guard active else {
                return completion(.failure(.generic(
                    "the guest has no active balloon driver (virtio_balloon not loaded): nothing changed")))
            }
            qmp.execute("balloon", arguments: ["value": .int(bytes)]) { result in
                switch result {
                case .failure(let e): completion(.failure(.qmp(e)))
                case .success:
                    self.balloonTarget = bytes
                    completion(.success(.object(["target-bytes": .int(bytes)])))
                }
            }
        }
    }

    /// Whether the guest's driver has set DRIVER_OK on the balloon device.
    private func balloonDriverActive(_ completion: @escaping (Bool) -> Void) {
        qmp?.execute("x-query-virtio-status", arguments: ["path": .string("\(Self.balloonPath)/virtio-backend")]) { result in
            guard case .success(let status) = result else { return completion(true) }  // cannot tell: let QEMU decide
            let statuses = status["status"]?["statuses"]?.arrayValue?.compactMap(\.stringValue) ?? []
            completion(statuses.contains { $0.hasPrefix("VIRTIO_CONFIG_S_DRIVER_OK") })
        }
    }

    /// Actual size, target and the guest's last statistics.
    func balloonInfo(completion: @escaping (Result<JSONValue, ControlError>) -> Void) {
        guard let qmp else { return completion(.failure(.generic("QEMU monitor not connected"))) }
        qmp.execute("query-balloon") { [weak self] result in
            guard let self else { return }
            guard case .success(let balloon) = result else {
                if case .failure(let e) = result { completion(.failure(.qmp(e))) }
                return
            }
            qmp.execute("qom-get", arguments: ["path": .string(Self.balloonPath), "property": "guest-stats"]) { stats in
                var info: JSONObject = [
                    "memory-bytes": .int(Int64(self.config.memoryBytes)),
                    "actual-bytes": balloon["actual"] ?? .null,
                ]
                if let target = self.balloonTarget { info["target-bytes"] = .int(target) }
                if case .success(let s) = stats {
                    var guest = JSONObject()
                    for (qom, name) in Self.balloonStats {
                        if let v = s["stats"]?[qom]?.int64Value, v >= 0 { guest[name] = .int(v) }
                    }
                    info["guest-stats"] = .object(guest)
                    info["stats-updated"] = s["last-update"] ?? .null
                }
                completion(.success(.object(info)))
            }
        }
    }
}

/// Bytes for people: 512 MiB, 1.5 GiB.
public struct ByteCount: CustomStringConvertible, Sendable {
    public var bytes: Int64
    public init(_ bytes: Int64) { self.bytes = bytes }

    public var description: String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var v = Double(bytes)
        var i = 0
        while abs(v) >= 1024 && i < units.count - 1 {
            v /= 1024
            i += 1
        }
        return i == 0 ? "\(bytes) B" : (v == v.rounded() ? "\(Int(v)) \(units[i])" : String(format: "%.1f %@", v, units[i]))
    }
}
