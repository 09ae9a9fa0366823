import Foundation

/// A program that could not run or exited non-zero, with the tail of its stderr.
public struct CommandFailure: Error, CustomStringConvertible {
    public var description: String
}

/// Runs a short-lived program to completion and returns its stdout; a start
/// failure or non-zero exit throws with the last lines of its stderr. For the
/// host tools hostvmm calls (apt, dpkg, depmod, qemu --version, swift build).
public func runCapturing(_ argv: [String], in directory: String? = nil, environment: [String: String]? = nil)
    throws(CommandFailure) -> Data
{
    let process = Process()
    process.executableURL = URL(fileURLWithPath: argv[0])
    process.arguments = Array(argv.dropFirst())
    if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
    if let environment { process.environment = environment }
    let out = Pipe()
    let err = Pipe()
    process.standardOutput = out
    process.standardError = err
    process.standardInput = FileHandle.nullDevice
    do {
        try process.run()
    } catch {
        throw CommandFailure(description: "cannot run \(argv[0]): \(error)")
    }
    // Read both pipes concurrently so a chatty stderr cannot block the child.
    nonisolated(unsafe) var errData = Data()
    let group = DispatchGroup()
    group.enter()
    DispatchQueue.global().async {
        errData = err.fileHandleForReading.readDataToEndOfFile()
        group.leave()
    }
    let outData = out.fileHandleForReading.readDataToEndOfFile()
    group.wait()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else {
        let tail = String(decoding: errData, as: UTF8.self).split(separator: "\n").suffix(8).joined(separator: "\n")
        throw CommandFailure(description: "\(argv.joined(separator: " ")) failed (status \(process.terminationStatus))"
                             + (tail.isEmpty ? "" : ":\n\(tail)"))
    }
    return outData
}
