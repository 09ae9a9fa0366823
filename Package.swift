// swift-tools-version: 6.0
// Module map and the only allowed dependency directions: ../shared/docs/architecture.md §2.
import PackageDescription

let package = Package(
    name: "hostvmm",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "guest-agent", targets: ["GuestAgent"]),
        .executable(name: "hostvmm", targets: ["HostVMMCLI"]),
        .library(name: "HostVMM", targets: ["HostVMM"]),
        .library(name: "AgentProtocol", targets: ["AgentProtocol"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        // Wire formats only: JSON, QGA framing and sync. No I/O, no Foundation.
        .target(name: "AgentProtocol"),
        // The guest binary. Standard library + Glibc only, so the static build stays small.
        // The X11 clipboard backend links libX11/libXfixes statically in the guest build.
        // libcrypt (static in the guest build) hashes guest-set-user-password's passwords.
        .executableTarget(name: "GuestAgent", dependencies: ["AgentProtocol", "LinuxSystem", "CX11", "CCrypt"]),
        .systemLibrary(name: "CCrypt", providers: [.apt(["libcrypt-dev"])]),
        // libX11 + libXfixes (Debian libx11-dev, libxfixes-dev; static: libxcb1-dev, libxau-dev, libxdmcp-dev).
        .systemLibrary(name: "CX11", providers: [.apt(["libx11-dev", "libxfixes-dev", "libxcb1-dev", "libxau-dev", "libxdmcp-dev"])]),
        // Linux syscalls Swift cannot call directly (variadic or fork-time work).
        .target(name: "CLinuxSupport"),
        // Thin, typed wrappers over the syscalls both binaries use (sockets, spawn, errors).
        .target(name: "LinuxSystem", dependencies: ["CLinuxSupport"]),
        // libseccomp (Debian libseccomp-dev): per-thread allow-lists for code that parses guest or client data.
        .target(name: "CThreadSandbox", linkerSettings: [.linkedLibrary("seccomp")]),
        .target(name: "ThreadSandbox", dependencies: ["CThreadSandbox", "LinuxSystem"]),
        // libspice-server (Debian libspice-server-dev).
        .systemLibrary(name: "CSpiceServer", pkgConfig: "spice-server", providers: [.apt(["libspice-server-dev"])]),
        // The SPICE server embedded in hostvmm: core interface on our event loop, agent char device.
        // Run path: scripts/build-spice-server.sh installs Debian's libspice-server, rebuilt with
        // a fix for a crash when a client leaves during display setup, in /usr/local/lib/hostvmm;
        // without it the loader falls back to the system copy (SpiceServer.library says which).
        .target(name: "SpiceBridge", dependencies: ["CSpiceServer", "AgentProtocol", "LinuxSystem", "CLinuxSupport", "ThreadSandbox"],
                // $ORIGIN/../lib/hostvmm: where scripts/package.sh's .deb puts the same library.
                linkerSettings: [.unsafeFlags(["-Xlinker", "-rpath", "-Xlinker", "/usr/local/lib/hostvmm",
                                               "-Xlinker", "-rpath", "-Xlinker", "$ORIGIN/../lib/hostvmm"])]),
        // Guest panics: event decoding, policy, crash bundles. Knows nothing of QMP's transport.
        .target(name: "pvpanic", dependencies: ["AgentProtocol"]),
        // Guest memory, split virtqueues and the vhost-user backend (issue #7). Standard library + LinuxSystem only.
        .target(name: "VirtioCore", dependencies: ["LinuxSystem", "CLinuxSupport"]),
        // virtio-input devices (keyboard, tablet) behind VirtioCore's backend.
        .target(name: "VirtioInput", dependencies: ["VirtioCore"]),
        // The virtio-gpu 2D device behind VirtioCore's backend; output through a display sink protocol.
        .target(name: "VirtioGPU", dependencies: ["VirtioCore"]),
        // The virtio-snd device (issue #12) behind VirtioCore's backend; sound in and out through a host protocol.
        .target(name: "VirtioSound", dependencies: ["VirtioCore"]),
        // libpulse (Debian libpulse-dev): the host's PulseAudio server for `--audio pulse`.
        .systemLibrary(name: "CPulse", pkgConfig: "libpulse", providers: [.apt(["libpulse-dev"])]),
        // hostvmm's PulseAudio playback and record streams, on libpulse's own thread.
        .target(name: "PulseAudio", dependencies: ["CPulse", "LinuxSystem"]),
        // libusbredirparser in QEMU's role, checking what a usbredir peer sends QEMU (Debian libusbredirparser-dev).
        .target(name: "CUSBRedirGuard", linkerSettings: [.linkedLibrary("usbredirparser")]),
        // The usbredir protocol (issue #13): packet numbers, the stream guard and observer, filter rules. No I/O.
        .target(name: "USBRedir", dependencies: ["CUSBRedirGuard"]),
        // libusb-1.0 + libusbredirhost (Debian libusbredirhost-dev, libusb-1.0-0-dev): host USB devices.
        .systemLibrary(name: "CUSBHost", pkgConfig: "libusbredirhost",
                       providers: [.apt(["libusbredirhost-dev", "libusb-1.0-0-dev"])]),
        // Host USB devices for a VM: enumeration, hot-unplug, one usbredirhost per attached device.
        .target(name: "USBHost", dependencies: ["CUSBHost", "USBRedir", "LinuxSystem"]),
        // Building guests (issue #14's layout): the embedded initramfs, the desktop disk, the host
        // tools they need. Knows nothing of running a VM.
        .target(name: "GuestImage", dependencies: ["LinuxSystem"]),
        .target(name: "HostVMM", dependencies: ["AgentProtocol", "LinuxSystem", "CLinuxSupport", "pvpanic", "SpiceBridge", "GuestImage",
                                                "VirtioCore", "VirtioInput", "VirtioGPU", "VirtioSound", "PulseAudio",
                                                "USBRedir", "USBHost", "ThreadSandbox"]),
        .executableTarget(
            name: "HostVMMCLI",
            dependencies: ["HostVMM", "GuestImage", "pvpanic", "USBRedir", "USBHost",
                           .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        // What every test target shares: a loop on its own thread, bounded waits, TestFailure.
        .target(name: "TestSupport", dependencies: ["LinuxSystem"], path: "Tests/TestSupport"),
        .testTarget(name: "AgentProtocolTests", dependencies: ["AgentProtocol"]),
        .testTarget(name: "USBRedirTests", dependencies: ["USBRedir", "USBHost"]),
        .testTarget(name: "PanicTests", dependencies: ["pvpanic", "AgentProtocol"]),
        .testTarget(name: "VirtioCoreTests", dependencies: ["VirtioCore", "VirtioInput", "VirtioGPU", "VirtioSound", "LinuxSystem", "CLinuxSupport",
                                                          "TestSupport"]),
        // Clients/: the Python SPICE clients the tests run (with Debian's /usr/bin/python3), not sources.
        .testTarget(name: "HostVMMTests", dependencies: ["HostVMM", "GuestImage", "AgentProtocol", "pvpanic", "SpiceBridge", "TestSupport",
                                                       "ThreadSandbox"],
                    exclude: ["Clients"]),
    ]
)

// libFuzzer targets (issue #16), only when HOSTVMM_FUZZ=1: scripts/fuzz.sh builds them with
// `--sanitize fuzzer --sanitize address` in a build directory of their own. libFuzzer supplies
// main(), so the normal build must never link them.
if Context.environment["HOSTVMM_FUZZ"] == "1" {
    package.targets.append(.executableTarget(
        name: "HostVMMFuzz",
        dependencies: ["AgentProtocol", "VirtioCore", "VirtioGPU", "VirtioInput", "VirtioSound", "USBRedir", "CLinuxSupport"],
        path: "Fuzz/Sources/HostVMMFuzz"))
}
