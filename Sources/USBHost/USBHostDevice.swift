import CUSBHost
import USBRedir
#if canImport(Glibc)
import Glibc
#endif

/// A USB device on the host, as libusb enumerates it (no open needed, except
/// for the strings, which are nil when the device node is not readable).
public struct USBHostDevice: Equatable, Sendable {
    public var bus: Int
    public var address: Int
    public var vendorID: UInt16
    public var productID: UInt16
    public var versionBCD: UInt16
    public var deviceClass: UInt8
    /// (class, subclass, protocol) of each interface of the active (or first) configuration.
    public var interfaces: [USBInterfaceClass]
    public var speed: USBSpeed
    public var manufacturer: String?
    public var product: String?

    public struct USBInterfaceClass: Equatable, Sendable {
        public var cls: UInt8, subclass: UInt8, proto: UInt8

        public init(cls: UInt8, subclass: UInt8, proto: UInt8) {
            self.cls = cls
            self.subclass = subclass
            self.proto = proto
        }
    }

    public init(bus: Int, address: Int, vendorID: UInt16, productID: UInt16, versionBCD: UInt16 = 0,
                deviceClass: UInt8, interfaces: [USBInterfaceClass] = [], speed: USBSpeed = .unknown,
                manufacturer: String? = nil, product: String? = nil) {
        self.bus = bus
        self.address = address
        self.vendorID = vendorID
        self.productID = productID
        self.versionBCD = versionBCD
        self.deviceClass = deviceClass
        self.interfaces = interfaces
        self.speed = speed
        self.manufacturer = manufacturer
        self.product = product
    }

    /// "BUS-ADDR", the form `hostvmm usb attach` takes (decimal, as lsusb's Bus/Device).
    public var busAddress: String { "\(bus)-\(address)" }
    public var vidpid: String { USBRedirDevice.vidpid(vendorID, productID) }

    public static let hubClass: UInt8 = 9
    public var isHub: Bool { deviceClass == Self.hubClass }

    /// A HID boot keyboard or mouse (interface 03/01/01 or 03/01/02): the host's own
    /// console input, refused unless forced.
    public var isBootKeyboardOrMouse: Bool {
        interfaces.contains { $0.cls == 3 && $0.subclass == 1 && ($0.proto == 1 || $0.proto == 2) }
    }

    /// Why attaching this device needs `force`, or nil.
    public var attachRefusal: String? {
        if isHub { return "\(busAddress) (\(vidpid)) is a hub: redirecting it would take every device behind it" }
        if isBootKeyboardOrMouse {
            return "\(busAddress) (\(vidpid)) is a boot keyboard or mouse, likely the host's own; use --force to hand it over"
        }
        return nil
    }

    /// Matches "VID:PID" (hex) or "BUS-ADDR" (decimal).
    public func matches(_ selector: USBDeviceSelector) -> Bool {
        switch selector {
        case .ids(let v, let p): return vendorID == v && productID == p
        case .location(let b, let a): return bus == b && address == a
        }
    }
}

/// How a person names a host device: `VID:PID` (hex, as lsusb) or `BUS-ADDR` (decimal).
public enum USBDeviceSelector: Equatable, Sendable, CustomStringConvertible {
    case ids(vendor: UInt16, product: UInt16)
    case location(bus: Int, address: Int)

    public init?(_ text: String) {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        if parts.count == 2, parts.allSatisfy({ (1...4).contains($0.count) }),
            let v = UInt16(parts[0], radix: 16), let p = UInt16(parts[1], radix: 16)
        {
            self = .ids(vendor: v, product: p)
            return
        }
        let loc = text.split(separator: "-", omittingEmptySubsequences: false)
        if loc.count == 2, let b = Int(loc[0]), let a = Int(loc[1]), (1...255).contains(b), (1...127).contains(a) {
            self = .location(bus: b, address: a)
            return
        }
        return nil
    }

    public var description: String {
        switch self {
        case .ids(let v, let p):
            return USBRedirDevice.vidpid(v, p)
        case .location(let b, let a): return "\(b)-\(a)"
        }
    }
}

public struct USBHostError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }

    static func libusb(_ what: String, _ code: Int32) -> USBHostError {
        USBHostError("\(what): \(String(cString: libusb_strerror(code)))")
    }
}

/// libusb's view of the host's USB devices.
public enum USBHostBus {
    /// Whether this host has USB at all: libusb answers an empty list, not an
    /// error, when there is no USB (measured: no /sys/bus/usb, libusb_init 0, 0 devices).
    public static var present: Bool {
        access("/sys/bus/usb/devices", F_OK) == 0 || access("/dev/bus/usb", F_OK) == 0
    }

    /// Every device except root hubs' virtual parents are listed (hubs too: `attachRefusal` says no).
    public static func list(context: OpaquePointer? = nil) throws(USBHostError) -> [USBHostDevice] {
        var ctx = context
        if ctx == nil {
            let r = libusb_init(&ctx)
            guard r == 0 else { throw .libusb("libusb_init", r) }
        }
        defer { if context == nil { libusb_exit(ctx) } }
        var list: UnsafeMutablePointer<OpaquePointer?>?
        let count = libusb_get_device_list(ctx, &list)
        guard count >= 0 else { throw .libusb("libusb_get_device_list", Int32(count)) }
        defer { libusb_free_device_list(list, 1) }
        var devices: [USBHostDevice] = []
        for i in 0..<count {
            guard let dev = list?[i] else { continue }
            devices.append(describe(dev))
        }
        return devices.sorted { ($0.bus, $0.address) < ($1.bus, $1.address) }
    }

    static func describe(_ dev: OpaquePointer) -> USBHostDevice {
        var d = libusb_device_descriptor()
        _ = libusb_get_device_descriptor(dev, &d)
        var interfaces: [USBHostDevice.USBInterfaceClass] = []
        var config: UnsafeMutablePointer<libusb_config_descriptor>?
        if libusb_get_active_config_descriptor(dev, &config) != 0 { _ = libusb_get_config_descriptor(dev, 0, &config) }
        if let config {
            for i in 0..<Int(config.pointee.bNumInterfaces) {
                let iface = config.pointee.interface[i]
                guard iface.num_altsetting > 0, let alt = iface.altsetting else { continue }
                interfaces.append(.init(cls: alt.pointee.bInterfaceClass, subclass: alt.pointee.bInterfaceSubClass,
                                        proto: alt.pointee.bInterfaceProtocol))
            }
            libusb_free_config_descriptor(config)
        }
        let speed: USBSpeed
        switch Int32(libusb_get_device_speed(dev)) {
        case Int32(LIBUSB_SPEED_LOW.rawValue): speed = .low
        case Int32(LIBUSB_SPEED_FULL.rawValue): speed = .full
        case Int32(LIBUSB_SPEED_HIGH.rawValue): speed = .high
        case Int32(LIBUSB_SPEED_SUPER.rawValue), Int32(LIBUSB_SPEED_SUPER_PLUS.rawValue): speed = .superSpeed
        default: speed = .unknown
        }
        var result = USBHostDevice(bus: Int(libusb_get_bus_number(dev)), address: Int(libusb_get_device_address(dev)),
                                   vendorID: d.idVendor, productID: d.idProduct, versionBCD: d.bcdDevice,
                                   deviceClass: d.bDeviceClass, interfaces: interfaces, speed: speed)
        var handle: OpaquePointer?
        if libusb_open(dev, &handle) == 0, let handle {
            result.manufacturer = string(handle, d.iManufacturer)
            result.product = string(handle, d.iProduct)
            libusb_close(handle)
        }
        return result
    }

    private static func string(_ handle: OpaquePointer, _ index: UInt8) -> String? {
        guard index != 0 else { return nil }
        var buffer = [UInt8](repeating: 0, count: 256)
        let n = libusb_get_string_descriptor_ascii(handle, index, &buffer, Int32(buffer.count))
        guard n > 0 else { return nil }
        return String(decoding: buffer[0..<Int(n)], as: UTF8.self)
    }
}
