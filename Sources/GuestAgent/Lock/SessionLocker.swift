import AgentProtocol
import LinuxSystem
#if canImport(Glibc)
import Glibc
#endif

/// Locks the guest's user sessions through systemd-logind on the system bus
/// (protocols.md §3.10): ListSessions, then Manager.LockSession for every
/// session of class "user". logind only emits the session's Lock signal; the
/// desktop's locker (GNOME Shell, KDE, xss-lock, ...) does the locking and sets
/// LockedHint.
///
/// Fallbacks, decided: none beyond logind. A guest without logind (no system
/// bus, or a bus without org.freedesktop.login1: ConsoleKit2 systems, busybox)
/// gets `SessionLocker.Failure.noSessionManager`, never a silent success.
enum SessionLocker {
    struct Session: Equatable {
        var id: String
        var uid: UInt32
        var user: String
        var seat: String
        var sessionClass: String
        var type: String
        var tty: String

        var json: JSONValue {
            .object([
                "id": .string(id), "uid": .int(Int64(uid)), "user": .string(user), "seat": .string(seat),
                "class": .string(sessionClass), "type": .string(type), "tty": .string(tty),
            ])
        }
    }

    enum Failure: Error, CustomStringConvertible {
        case noSessionManager(String)
        case failed(String)

        var description: String {
            switch self {
            case .noSessionManager(let why): return "cannot lock: the guest has no session manager (\(why))"
            case .failed(let why): return "cannot lock: \(why)"
            }
        }
    }

    static let logind = "org.freedesktop.login1"
    static let managerPath = "/org/freedesktop/login1"
    static let managerInterface = "org.freedesktop.login1.Manager"
    static let sessionInterface = "org.freedesktop.login1.Session"

    /// Which sessions get locked: people's sessions, not greeters or services.
    static func shouldLock(_ session: Session) -> Bool { session.sessionClass == "user" }

    static func lockUserSessions(busPath: String) throws(Failure) -> [Session] {
        let bus: SystemBus
        do { bus = try SystemBus(path: busPath) } catch {
            if case .noBus(let why) = error { throw .noSessionManager(why) }
            throw .failed("\(error)")
        }
        do {
            let reply = try bus.call(destination: logind, path: managerPath, interface: managerInterface,
                                     member: "ListSessions")
            guard case .array(_, let rows)? = reply.body.first else { throw Failure.failed("ListSessions: unexpected reply") }
            var locked: [Session] = []
            for case .structure(let f) in rows where f.count == 5 {
                guard let id = f[0].stringValue, let uid = f[1].uint32Value, let user = f[2].stringValue,
                      let seat = f[3].stringValue, let path = f[4].stringValue
                else { continue }
                let properties = (try? bus.properties(destination: logind, path: path, interface: sessionInterface)) ?? [:]
                func text(_ name: String) -> String { properties[name]?.stringValue ?? "" }
                let session = Session(id: id, uid: uid, user: user, seat: seat, sessionClass: text("Class"),
                                      type: text("Type"), tty: text("TTY"))
                guard shouldLock(session) else { continue }
                try bus.call(destination: logind, path: managerPath, interface: managerInterface,
                             member: "LockSession", [.string(id)])
                locked.append(session)
            }
            return locked
        } catch let failure as Failure {
            throw failure
        } catch let error as SystemBus.Failure {
            if case .remote(let name, _) = error,
               name == "org.freedesktop.DBus.Error.ServiceUnknown" || name == "org.freedesktop.DBus.Error.NameHasNoOwner"
            {
                throw .noSessionManager("\(logind) is not on the system bus")
            }
            throw .failed("\(error)")
        } catch {
            throw .failed("\(error)")
        }
    }
}
