/// usbredir filter rules (`usbredirfilter.h`): `class,vendor,product,version,allow`
/// per rule, rules joined by `|`; each number decimal or 0x-hex, -1 for "any".
/// spice-gtk writes them with `,` between fields, QEMU's `usb-redir,filter=` with
/// `:` (a comma would end QEMU's property); both are accepted here.
/// The first rule that matches decides; a device no rule matches is refused.
public struct USBRedirFilter: Equatable, Sendable, CustomStringConvertible {
    public struct Rule: Equatable, Sendable {
        public var deviceClass: Int  // -1: any
        public var vendorID: Int
        public var productID: Int
        public var versionBCD: Int
        public var allow: Bool
    }

    public var rules: [Rule]

    public enum ParseError: Error, Equatable, CustomStringConvertible {
        case empty
        case fieldCount(rule: String)
        case badNumber(field: String, rule: String)
        case outOfRange(field: String, rule: String)

        public var description: String {
            switch self {
            case .empty: return "a USB filter needs at least one rule (class,vendor,product,version,allow)"
            case .fieldCount(let r): return "USB filter rule '\(r)' needs 5 fields: class,vendor,product,version,allow"
            case .badNumber(let f, let r): return "USB filter rule '\(r)': '\(f)' is not a number (decimal, 0x-hex or -1)"
            case .outOfRange(let f, let r): return "USB filter rule '\(r)': \(f) is out of range"
            }
        }
    }

    public init(rules: [Rule]) { self.rules = rules }

    public init(parsing text: String) throws(ParseError) {
        var rules: [Rule] = []
        for piece in text.split(separator: "|", omittingEmptySubsequences: true) {
            let ruleText = String(piece).trimmingCharacters(in: " \t")
            let fields = ruleText.split(whereSeparator: { $0 == "," || $0 == ":" }).map(String.init)
            guard fields.count == 5 else { throw .fieldCount(rule: ruleText) }
            var values: [Int] = []
            for (field, limit) in zip(fields, [255, 0xFFFF, 0xFFFF, 0xFFFF, Int.max]) {
                guard let v = Self.number(field) else { throw .badNumber(field: field, rule: ruleText) }
                guard v == -1 || (0...limit).contains(v) else { throw .outOfRange(field: field, rule: ruleText) }
                values.append(v)
            }
            rules.append(Rule(deviceClass: values[0], vendorID: values[1], productID: values[2], versionBCD: values[3],
                              allow: values[4] != 0))
        }
        guard !rules.isEmpty else { throw .empty }
        self.rules = rules
    }

    private static func number(_ text: String) -> Int? {
        let t = text.trimmingCharacters(in: " \t")
        if t == "-1" { return -1 }
        if t.lowercased().hasPrefix("0x") { return Int(t.dropFirst(2), radix: 16) }
        return Int(t)
    }

    /// The first matching rule's verdict for a device with these ids and classes
    /// (its device class and each interface's, as usbredirfilter_check looks at both:
    /// a device is allowed when every class it has is allowed). No match: refused.
    public func allows(vendorID: UInt16, productID: UInt16, versionBCD: UInt16, classes: [UInt8]) -> Bool {
        let looked = classes.isEmpty ? [0] : classes
        return looked.allSatisfy { cls in
            let rule = rules.first {
                ($0.deviceClass == -1 || $0.deviceClass == Int(cls)) && ($0.vendorID == -1 || $0.vendorID == Int(vendorID))
                    && ($0.productID == -1 || $0.productID == Int(productID))
                    && ($0.versionBCD == -1 || $0.versionBCD == Int(versionBCD))
            }
            return rule?.allow ?? false
        }
    }

    /// QEMU's `usb-redir,filter=` spelling: `:` between fields (hex ids as spice-gtk writes them).
    public var qemuProperty: String { render(separator: ":") }

    /// spice-gtk's spelling.
    public var description: String { render(separator: ",") }

    private func render(separator: String) -> String {
        func hex(_ v: Int) -> String { v == -1 ? "-1" : "0x" + String(v, radix: 16) }
        return rules.map { r in
            [hex(r.deviceClass), hex(r.vendorID), hex(r.productID), hex(r.versionBCD), r.allow ? "1" : "0"]
                .joined(separator: separator)
        }.joined(separator: "|")
    }
}

private extension String {
    func trimmingCharacters(in set: String) -> String {
        var s = Substring(self)
        while let f = s.first, set.contains(f) { s = s.dropFirst() }
        while let l = s.last, set.contains(l) { s = s.dropLast() }
        return String(s)
    }
}
