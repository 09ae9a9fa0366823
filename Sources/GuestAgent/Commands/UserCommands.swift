import AgentProtocol
import LinuxSystem
#if canImport(Glibc)
import Glibc
#endif

/// guest-set-user-password (/etc/shadow written here: ShadowPasswords) and
/// guest-ssh-get/add/remove-authorized-keys (~USER/.ssh/authorized_keys).
enum UserCommands {
    static let specs: [CommandSpec] = [
        CommandSpec(name: "guest-set-user-password") { args, _ throws(QGAError) in
            let username = try args.string("username")
            let password = try Base64.decode(try args.string("password"))
            let crypted = try args.bool("crypted")
            try args.finish()
            try setPassword(username: username, password: password, crypted: crypted)
            return .reply(.object([:]))
        },
        CommandSpec(name: "guest-ssh-get-authorized-keys") { args, _ throws(QGAError) in
            let user = try lookup(try args.string("username"))
            try args.finish()
            guard let text = FileIO.readText(user.keysFile) else {
                throw .generic("failed to read '\(user.keysFile)': \(FileIO.errnoText())")
            }
            return .reply(.object(["keys": .array(keys(in: text).map { .string($0) })]))
        },
        CommandSpec(name: "guest-ssh-add-authorized-keys") { args, _ throws(QGAError) in
            let user = try lookup(try args.string("username"))
            let newKeys = try args.stringArray("keys")
            let reset = try args.optionalBool("reset") ?? false
            try args.finish()
            for key in newKeys { try validate(key) }
            var current = reset ? [] : keys(in: FileIO.readText(user.keysFile) ?? "")
            for key in newKeys where !current.contains(key) { current.append(key) }
            try write(current, for: user)
            return .reply(.object([:]))
        },
        CommandSpec(name: "guest-ssh-remove-authorized-keys") { args, _ throws(QGAError) in
            let user = try lookup(try args.string("username"))
            let removed = try args.stringArray("keys")
            try args.finish()
            for key in removed { try validate(key) }
            // A missing file or key is not an error (qemu-ga: nothing to remove).
            guard let text = FileIO.readText(user.keysFile) else { return .reply(.object([:])) }
            try write(keys(in: text).filter { !removed.contains($0) }, for: user)
            return .reply(.object([:]))
        },
    ]

    private static func setPassword(username: String, password: [UInt8], crypted: Bool) throws(QGAError) {
        // shadow(5) is ':'- and newline-separated: either in a name or a password
        // would let a host smuggle in a second account.
        guard !username.isEmpty, !username.contains(":"), !username.contains("\n") else {
            throw .generic("forbidden characters in the user name")
        }
        guard !password.contains(0x0A), !password.contains(0x0D), !password.contains(0) else {
            throw .generic("forbidden characters in raw password")
        }
        _ = try lookup(username)
        try ShadowPasswords.setPassword(user: username, password: password, crypted: crypted)
    }

    struct User {
        var name: String
        var home: String
        var uid: uid_t
        var gid: gid_t
        var sshDir: String { "\(home)/.ssh" }
        var keysFile: String { "\(sshDir)/authorized_keys" }
    }

    /// Reads /etc/passwd directly. The agent is a static executable, and
    /// getpwnam in a static glibc would load the guest's NSS modules, which
    /// must then match our glibc exactly: local accounts are what a host
    /// provisions keys and passwords for (see protocol.md §1.7).
    static func lookup(_ name: String, passwd: String? = FileIO.readText("/etc/passwd")) throws(QGAError) -> User {
        for line in (passwd ?? "").split(separator: "\n") {
            let f = line.split(separator: ":", omittingEmptySubsequences: false)
            guard f.count >= 7, f[0] == name, let uid = uid_t(f[2]), let gid = gid_t(f[3]) else { continue }
            return User(name: name, home: String(f[5]), uid: uid, gid: gid)
        }
        throw .generic("failed to lookup user '\(name)'")
    }

    private static func keys(in text: String) -> [String] {
        text.split(separator: "\n").map { $0.trimmingSpaces() }.filter { !$0.isEmpty && !$0.hasPrefix("#") }
    }

    private static func validate(_ key: String) throws(QGAError) {
        guard !key.trimmingSpaces().isEmpty, !key.contains("\n"), !key.contains("\r") else {
            throw .generic("invalid OpenSSH public key: '\(key)'")
        }
    }

    /// Writes the file owned by the user, 0600 in a 0700 ~/.ssh, as sshd requires.
    private static func write(_ keys: [String], for user: User) throws(QGAError) {
        if !FileIO.isDirectory(user.sshDir) {
            guard mkdir(user.sshDir, 0o700) == 0 else {
                throw .generic("failed to create directory '\(user.sshDir)': \(FileIO.errnoText())")
            }
            chown(user.sshDir, user.uid, user.gid)
        }
        let text = keys.isEmpty ? "" : keys.joined(separator: "\n") + "\n"
        do { try FileIO.writeAtomically(user.keysFile, Array(text.utf8), mode: 0o600) } catch {
            throw .generic("failed to write '\(user.keysFile)': \(error)")
        }
        chown(user.keysFile, user.uid, user.gid)
    }
}
