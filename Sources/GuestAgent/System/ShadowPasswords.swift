import AgentProtocol
import CCrypt
import LinuxSystem
#if canImport(Glibc)
import Glibc
#endif

/// guest-set-user-password without chpasswd: the agent hashes with libcrypt (linked
/// statically) and rewrites /etc/shadow itself, as `chpasswd` (and `chpasswd -e` for a
/// given hash) would. Decided for every guest, not only those without chpasswd: one
/// behaviour to test, no program run on a host's request, and the hash method the
/// guest's own policy names (ENCRYPT_METHOD in /etc/login.defs). What it does not do
/// that PAM's chpasswd might: keep an SELinux label on the new file, tell nscd.
enum ShadowPasswords {
    static let shadowPath = "/etc/shadow"

    /// Sets USER's hash (crypted: the caller's, checked for shadow(5)'s separators;
    /// otherwise made here from the password) and the day of the last change.
    static func setPassword(user: String, password: [UInt8], crypted: Bool) throws(QGAError) {
        let hash: String
        if crypted {
            hash = String(decoding: password, as: UTF8.self)
            guard !hash.isEmpty, !hash.contains(":"), hash.utf8.allSatisfy({ $0 >= 0x20 && $0 != 0x7F }) else {
                throw .generic("forbidden characters in the crypted password")
            }
        } else {
            hash = try PasswordHash.make(password, prefix: PasswordHash.prefix(loginDefs: FileIO.readText("/etc/login.defs")))
        }
        // lckpwdf: the lock shadow-utils and PAM take, so a concurrent passwd/useradd waits.
        guard lckpwdf() == 0 else {
            throw .generic("cannot lock the password files: \(FileIO.errnoText())")
        }
        defer { ulckpwdf() }
        var info = stat()
        guard stat(shadowPath, &info) == 0, let text = FileIO.readText(shadowPath) else {
            throw .generic("cannot read '\(shadowPath)': \(FileIO.errnoText())")
        }
        let today = Int(time(nil) / 86_400)
        let updated = ShadowFile.settingPassword(in: text, user: user, hash: hash, day: today)
        do {
            try FileIO.writeAtomically(shadowPath, Array(updated.utf8), mode: info.st_mode & 0o7777,
                                       owner: (info.st_uid, info.st_gid), durable: true)
        } catch {
            throw .generic("cannot write '\(shadowPath)': \(error)")
        }
    }
}

/// shadow(5): `name:hash:lastchg:min:max:warn:inactive:expire:reserved`, one line per account.
enum ShadowFile {
    /// The file with USER's hash and last-change day replaced; every other line kept byte
    /// for byte. A user with no line gets one with shadow-utils' defaults (no minimum,
    /// 99999 days maximum, 7 days' warning), as useradd would have written it.
    static func settingPassword(in text: String, user: String, hash: String, day: Int) -> String {
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        if lines.last == "" { lines.removeLast() }
        var found = false
        for i in lines.indices {
            var fields = lines[i].split(separator: ":", omittingEmptySubsequences: false).map(String.init)
            guard fields.first == user, !found else { continue }
            while fields.count < 9 { fields.append("") }
            fields[1] = hash
            fields[2] = String(day)
            lines[i] = fields.joined(separator: ":")
            found = true
        }
        if !found { lines.append("\(user):\(hash):\(day):0:99999:7:::") }
        return lines.joined(separator: "\n") + "\n"
    }
}

/// crypt(3) through libxcrypt.
enum PasswordHash {
    /// The setting prefix for the guest's policy: login.defs' ENCRYPT_METHOD (Debian 12:
    /// YESCRYPT), SHA-512 when it names none or one we would not choose (DES, MD5). SHA-512
    /// is the default because busybox's own crypt, which a minimal guest's `su` may use,
    /// knows it and not yescrypt.
    static func prefix(loginDefs: String?) -> String {
        for line in (loginDefs ?? "").split(separator: "\n") {
            let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard words.count >= 2, words[0] == "ENCRYPT_METHOD" else { continue }
            switch words[1].uppercased() {
            case "YESCRYPT": return "$y$"
            case "SHA256": return "$5$"
            default: return "$6$"
            }
        }
        return "$6$"
    }

    static func make(_ password: [UInt8], prefix: String) throws(QGAError) -> String {
        // A fresh random salt: crypt_gensalt_rn reads the kernel's random source when given none.
        var setting = [CChar](repeating: 0, count: Int(CRYPT_GENSALT_OUTPUT_SIZE))
        guard crypt_gensalt_rn(prefix, 0, nil, 0, &setting, Int32(setting.count)) != nil else {
            throw .generic("cannot make a salt for '\(prefix)': \(FileIO.errnoText())")
        }
        let data = UnsafeMutablePointer<crypt_data>.allocate(capacity: 1)
        defer { data.deallocate() }
        memset(data, 0, MemoryLayout<crypt_data>.size)
        let phrase = password.map { CChar(bitPattern: $0) } + [0]
        guard let result = crypt_r(phrase, setting, data) else {
            throw .generic("cannot hash the password: \(FileIO.errnoText())")
        }
        let hash = String(cString: result)
        // libxcrypt's failure tokens start with '*'.
        guard hash.hasPrefix("$") else { throw .generic("cannot hash the password with '\(prefix)'") }
        return hash
    }
}
