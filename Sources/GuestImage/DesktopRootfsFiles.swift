/// What goes into the desktop guest's root filesystem on top of debootstrap's
/// tree, and the modules it gets. Pure data: the builder writes it, tests read
/// it, and every string here is part of the image's cache key. Nothing here
/// interpolates data from outside the builder.
enum DesktopRootfsFiles {
    // MARK: - debootstrap

    static let suite = "bookworm"
    static let mirror = "http://deb.debian.org/debian"
    static let variant = "minbase"
    /// On top of minbase (111 packages, 41 MB of .debs). logind is part of
    /// `systemd`; libpam-systemd adds pam_systemd to common-session so that a
    /// login becomes a logind session; dbus-bin has dbus-monitor (the
    /// session-locker below); kmod gives modprobe for udev; alsa-utils gives
    /// aplay, arecord and amixer for the sound card (issue #12).
    static let packages = ["systemd", "systemd-sysv", "dbus", "dbus-bin", "libpam-systemd", "udev", "kmod", "alsa-utils"]

    /// Left out of the base tarball: debootstrap's downloaded .debs (41 MB) and
    /// the apt lists (49 MB); a throwaway guest has no use for either.
    static let baseTreeRemovals = ["var/cache/apt/archives", "var/lib/apt/lists"]

    // MARK: - kernel modules

    /// Loaded by the initramfs, in this order, before it mounts the root disk:
    /// Debian's 6.12 kernel has virtio_pci and virtio_console built in, but
    /// virtio_blk and ext4 as modules. crc32c_generic comes first because
    /// ext4 and jbd2 name crc32c only as a soft dependency, which busybox
    /// insmod ignores ("Cannot load crc32c driver" at mount otherwise).
    static let initramfsModules = ["crc32c_generic", "virtio_blk", "ext4"]

    /// Modules (with their dependencies) copied into the root filesystem's
    /// /lib/modules/RELEASE, with depmod run there; the rest of the kernel's
    /// 100 MB of modules would only make systemd load ~50 useless ones (AHCI,
    /// TCO watchdog, drm, kvm) on q35.
    /// - virtio_blk, ext4, crc32c_generic: loaded by the initramfs already;
    ///   listed so that modprobe and udev see them as present.
    /// - GuestInitFiles' lists, as in the default guest: virtio_balloon, pvpanic and
    ///   pvpanic_pci (hostvmm's devices); button and evdev (the ACPI power button, which
    ///   logind turns into poweroff); virtio_input (keyboard, tablet, mouse); virtio_gpu
    ///   (the display; drm and its helpers come with it); virtio_snd (the sound card, with
    ///   snd, snd-pcm, snd-timer and soundcore); xhci_pci, ehci_pci, usb_storage, uas,
    ///   sd_mod, usbhid (USB redirection); virtio_net and virtio_rng (the NIC, entropy).
    /// - autofs4, binfmt_misc: systemd's proc-sys-fs-binfmt_misc.automount.
    /// - configfs: sys-kernel-config.mount.
    /// - qemu_fw_cfg: /sys/firmware/qemu_fw_cfg.
    static let rootfsModules = initramfsModules + GuestInitFiles.modules + GuestInitFiles.displayModules
        + GuestInitFiles.soundModules + GuestInitFiles.usbModules
        + ["autofs4", "binfmt_misc", "configfs", "qemu_fw_cfg"]

    /// depmod's inputs besides the modules themselves.
    static let modulesMetadata = ["modules.builtin", "modules.builtin.modinfo", "modules.order"]

    // MARK: - files

    struct File: Equatable {
        var path: String  // relative to the root
        var content: String
        var mode: UInt16
    }

    static let hostname = "desktop"

    /// The guest agent's paths, as packaging/install.sh installs them.
    static let agentPath = "usr/sbin/guest-agent"

    static var files: [File] {
        [
            File(path: "etc/hostname", content: hostname + "\n", mode: 0o644),
            File(path: "etc/hosts", content: "127.0.0.1\tlocalhost\n127.0.1.1\t\(hostname)\n", mode: 0o644),
            // pam_env warns at every login without a locale.
            File(path: "etc/default/locale", content: "LANG=C.UTF-8\n", mode: 0o644),
            // The initramfs mounts the root read-write; no fsck pass (the disk is
            // a fresh overlay of a clean image at every boot).
            File(path: "etc/fstab", content: "/dev/vda / ext4 rw,relatime,errors=remount-ro 0 0\n", mode: 0o644),
            File(path: "etc/systemd/system/getty@tty1.service.d/autologin.conf", content: autologin, mode: 0o644),
            File(path: "usr/local/sbin/session-locker", content: sessionLocker, mode: 0o755),
            File(path: "etc/systemd/system/session-locker.service", content: sessionLockerUnit, mode: 0o644),
            File(path: "usr/lib/systemd/system/guest-agent.service", content: agentUnit, mode: 0o644),
            File(path: "usr/lib/udev/rules.d/60-guest-agent.rules", content: agentUdevRule, mode: 0o644),
            // The NIC (issue #14): systemd-networkd asks DHCP on any wired interface.
            File(path: "etc/systemd/network/20-wired.network",
                 content: "[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n", mode: 0o644),
        ]
    }

    /// (link path, target): what `systemctl enable` would make.
    static let symlinks: [(path: String, target: String)] = [
        ("etc/systemd/system/multi-user.target.wants/session-locker.service",
         "/etc/systemd/system/session-locker.service"),
        ("etc/systemd/system/multi-user.target.wants/systemd-networkd.service",
         "/lib/systemd/system/systemd-networkd.service"),
        ("etc/systemd/system/sockets.target.wants/systemd-networkd.socket",
         "/lib/systemd/system/systemd-networkd.socket"),
        // The udev rule's SYSTEMD_WANTS pulls the agent in already; this is the
        // unit's own [Install] WantedBy=, as `systemctl enable guest-agent` makes it.
        (#"etc/systemd/system/dev-virtio\x2dports-org.qemu.guest_agent.0.device.wants/guest-agent.service"#,
         "/lib/systemd/system/guest-agent.service"),
    ]

    /// Timers and units useless in a throwaway VM that only cost boot time.
    static let removals = [
        "etc/systemd/system/timers.target.wants/apt-daily.timer",
        "etc/systemd/system/timers.target.wants/apt-daily-upgrade.timer",
        "etc/systemd/system/timers.target.wants/dpkg-db-backup.timer",
        "etc/systemd/system/timers.target.wants/e2scrub_all.timer",
        "etc/systemd/system/timers.target.wants/fstrim.timer",
        "etc/systemd/system/multi-user.target.wants/e2scrub_reap.service",
    ]

    /// Root autologin on tty1 (a VT: it exists with `-display none` too, on
    /// the dummy console); pam_systemd makes it a logind session on seat0.
    /// `\\u` is systemd's escape for agetty's `\u` (the user name).
    static let autologin = #"""
        [Service]
        ExecStart=
        ExecStart=-/sbin/agetty -o '-p -f -- \\u' --noclear --autologin root %I $TERM

        """#

    /// Stands in for a desktop screen locker: logind emits Lock/Unlock on the
    /// session object for `loginctl lock-sessions` (Manager.LockSessions); a
    /// real locker locks the screen and reports it with SetLockedHint. This
    /// one only reports.
    static let sessionLocker = #"""
        #!/bin/bash
        # Stand-in for a desktop screen locker (hostvmm desktop guest).
        # logind emits Lock/Unlock on /org/freedesktop/login1/session/<id>
        # (org.freedesktop.login1.Session) for `loginctl lock-sessions`; a real
        # locker locks the screen and then calls SetLockedHint. We only report.
        # dbus-monitor --profile prints one tab-separated line per message:
        #   sig <time> <serial> <sender> <destination> <path> <interface> <member>
        set -u
        exec dbus-monitor --system --profile \
          "type='signal',interface='org.freedesktop.login1.Session',member='Lock'" \
          "type='signal',interface='org.freedesktop.login1.Session',member='Unlock'" |
        while IFS=$'\t' read -r type _ _ _ _ path iface member; do
          [ "$type" = sig ] && [ "$iface" = org.freedesktop.login1.Session ] || continue
          case $member in Lock) hint=true ;; Unlock) hint=false ;; *) continue ;; esac
          if busctl call org.freedesktop.login1 "$path" org.freedesktop.login1.Session SetLockedHint b "$hint"; then
            echo "session-locker: $member $path -> LockedHint=$hint"
          fi
        done

        """#

    static let sessionLockerUnit = """
        [Unit]
        Description=Stand-in screen locker (logind Lock/Unlock -> LockedHint)
        Requires=dbus.socket
        After=dbus.socket systemd-logind.service

        [Service]
        ExecStart=/usr/local/sbin/session-locker
        Restart=always
        RestartSec=1

        [Install]
        WantedBy=multi-user.target

        """

    /// packaging/guest-agent.service, byte for byte (a test compares them).
    static let agentUnit = #"""
        # hostvmm guest agent: started when the guest agent port appears (see
        # 60-guest-agent.rules), stopped when it goes away. It replaces Debian's
        # qemu-guest-agent.service; both cannot hold the port at once. Options:
        # /etc/default/guest-agent (the .deb ships one; see scripts/build-agent-deb.sh).
        [Unit]
        Description=hostvmm guest agent (qemu-guest-agent protocol)
        Documentation=man:qemu-ga(8)
        BindsTo=dev-virtio\x2dports-org.qemu.guest_agent.0.device
        After=dev-virtio\x2dports-org.qemu.guest_agent.0.device
        Conflicts=qemu-guest-agent.service

        [Service]
        EnvironmentFile=-/etc/default/guest-agent
        ExecStart=/usr/sbin/guest-agent -m virtio-serial -p /dev/virtio-ports/org.qemu.guest_agent.0 $GUEST_AGENT_OPTIONS
        Restart=always
        RestartSec=1

        [Install]
        WantedBy=dev-virtio\x2dports-org.qemu.guest_agent.0.device

        """#

    /// packaging/60-guest-agent.rules, byte for byte (a test compares them).
    static let agentUdevRule = #"""
        # Start the hostvmm guest agent when the host's agent port appears.
        SUBSYSTEM=="virtio-ports", ATTR{name}=="org.qemu.guest_agent.0", TAG+="systemd", ENV{SYSTEMD_WANTS}+="guest-agent.service"

        """#

    // MARK: - machine id

    /// A fresh machine id (32 lowercase hex digits) for each image build, so
    /// that images do not share debootstrap's. A valid id keeps systemd from
    /// treating the boot as a first boot (an empty /etc/machine-id would start
    /// systemd-firstboot, which prompts on the console).
    static func randomMachineID() -> String {
        var g = SystemRandomNumberGenerator()
        return (0..<16).map { _ in
            let b = UInt8.random(in: 0...255, using: &g)
            let hex = String(b, radix: 16)
            return hex.count == 1 ? "0" + hex : hex
        }.joined()
    }

    // MARK: - initramfs

    /// busybox applets the initramfs init uses (as symlinks to busybox).
    static let initramfsApplets = ["sh", "mount", "umount", "insmod", "switch_root", "sleep", "cat", "echo",
                                   "poweroff"]

    /// The initramfs's /init: load the root disk's modules (listed in
    /// /etc/modules.load by the builder), mount `root=` (devtmpfs too: the
    /// kernel has CONFIG_DEVTMPFS_MOUNT off), move /dev, switch_root to
    /// systemd. If the root cannot be mounted it says why on the console and
    /// powers off, so `hostvmm up` ends instead of waiting for an agent.
    static let initramfsInit = #"""
        #!/bin/sh
        # hostvmm desktop guest initramfs: load the root disk's modules, mount root=, switch_root.
        export PATH=/bin
        mount -t proc proc /proc
        mount -t sysfs sysfs /sys
        mount -t devtmpfs devtmpfs /dev
        while read -r module; do
            insmod "/lib/modules/$module" || echo "initramfs: cannot load $module"
        done < /etc/modules.load
        root=/dev/vda mode=rw fstype=ext4
        for arg in $(cat /proc/cmdline); do
            case "$arg" in
                root=*) root="${arg#root=}" ;;
                rootfstype=*) fstype="${arg#rootfstype=}" ;;
                ro) mode=ro ;;
                rw) mode=rw ;;
            esac
        done
        # virtio_blk probes asynchronously: wait for the node, 10 s at most.
        tries=0
        while [ ! -b "$root" ] && [ $tries -lt 200 ]; do sleep 0.05; tries=$((tries + 1)); done
        if ! mount -t "$fstype" -o "$mode" "$root" /newroot; then
            echo "initramfs: cannot mount $root ($fstype, $mode); powering off"
            sleep 1
            poweroff -f
        fi
        mount --move /dev /newroot/dev
        umount /proc /sys
        exec switch_root /newroot /sbin/init

        """#

    /// Everything above that is text, for the cache key.
    static var keyMaterial: [String] {
        [suite, mirror, variant] + packages + baseTreeRemovals + initramfsModules + rootfsModules + modulesMetadata
            + files.flatMap { [$0.path, $0.content, String($0.mode, radix: 8)] }
            + symlinks.flatMap { [$0.path, $0.target] } + removals + initramfsApplets + [initramfsInit, hostname]
    }
}
