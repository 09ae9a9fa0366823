import AgentProtocol
import LinuxSystem
#if canImport(Glibc)
import Glibc
#endif

/// guest-get-memory-blocks, guest-set-memory-blocks, guest-get-memory-block-info
/// (/sys/devices/system/memory).
enum MemoryCommands {
    static let root = "/sys/devices/system/memory"

    static let specs: [CommandSpec] = [
        CommandSpec(name: "guest-get-memory-blocks") { args, _ throws(QGAError) in
            try args.finish()
            guard FileIO.isDirectory(root) else { throw .generic("this feature or command is not currently supported") }
            let blocks: [JSONValue] = FileIO.list(root).compactMap { name in
                guard name.hasPrefix("memory"), let index = Int64(name.dropFirst(6)) else { return nil }
                let dir = "\(root)/\(name)"
                return .object([
                    "phys-index": .int(index),
                    "online": .bool(FileIO.readLine("\(dir)/state") == "online"),
                    "can-offline": .bool(FileIO.readLine("\(dir)/removable") == "1"),
                ])
            }
            return .reply(.array(blocks))
        },
        CommandSpec(name: "guest-set-memory-blocks") { args, _ throws(QGAError) in
            let list = try args.array("mem-blks")
            try args.finish()
            var results: [JSONValue] = []
            for (position, item) in list.enumerated() {
                var entry = try QGAArguments.element(item, of: "mem-blks", at: position)
                let index = try entry.int("phys-index")
                let online = try entry.bool("online")
                _ = try entry.optionalBool("can-offline")
                try entry.finish()
                results.append(setBlock(index, online: online))
            }
            return .reply(.array(results))
        },
        CommandSpec(name: "guest-get-memory-block-info") { args, _ throws(QGAError) in
            try args.finish()
            guard let hex = FileIO.readLine("\(root)/block_size_bytes"), let size = Int64(hex, radix: 16) else {
                throw .generic("this feature or command is not currently supported")
            }
            return .reply(.object(["size": .int(size)]))
        },
    ]

    private static func setBlock(_ index: Int64, online: Bool) -> JSONValue {
        var result: JSONObject = ["phys-index": .int(index)]
        let dir = "\(root)/memory\(index)"
        guard index >= 0, FileIO.isDirectory(dir) else {
            result["response"] = "not-found"
            return .object(result)
        }
        if !online && FileIO.readLine("\(dir)/removable") == "0" {
            result["response"] = "operation-not-supported"
            return .object(result)
        }
        do {
            try FileIO.writeString("\(dir)/state", online ? "online" : "offline")
            result["response"] = "success"
        } catch {
            result["response"] = "operation-failed"
            result["error-code"] = .int(Int64(error.errno))
        }
        return .object(result)
    }
}
