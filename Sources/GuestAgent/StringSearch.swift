extension StringProtocol {
    /// Whether `needle` occurs in this string, compared byte for byte in UTF-8 (paths,
    /// sysfs words). The guest build leaves out _StringProcessing (about 1 MB of the
    /// static binary, issue #17), which is where `contains(_: String)` comes from.
    func containsBytes(_ needle: String) -> Bool {
        let hay = Array(utf8), pin = Array(needle.utf8)
        guard !pin.isEmpty else { return true }
        guard hay.count >= pin.count else { return false }
        for start in 0...(hay.count - pin.count) where hay[start] == pin[0] {
            if hay[start..<(start + pin.count)].elementsEqual(pin) { return true }
        }
        return false
    }
}
