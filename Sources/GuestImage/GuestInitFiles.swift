/// The embedded guest's init (architecture.md §5): busybox init as PID 1, an
/// rcS that mounts, loads modules and links the virtio ports, the guest agent
/// respawned by init, and busybox acpid turning the ACPI power button into a
/// clean poweroff. Nothing here interpolates data from outside the builder.
enum GuestInitFiles {
    /// Modules the embedded guest loads (with their dependencies).
    /// pvpanic/pvpanic-pci: panic reports; virtio_balloon: memory; button+evdev:
    /// the ACPI power button as an input event for acpid; virtio_input: the
    /// keyboard, tablet and mouse (vhost-user-input). Listed in /etc/modules.load.
    /// virtio_net: the NIC (issue #14; rcS asks DHCP when eth0 exists); virtio_rng: entropy.
    static let modules = ["virtio_balloon", "pvpanic", "pvpanic_pci", "button", "evdev", "virtio_input", "virtio_net",
                          "virtio_rng"]

    /// Loaded (with their dependencies, less what `modules` already loaded) only when the
    /// VM has a virtio-gpu (PCI 1af4:1050), from /etc/modules-display.load: virtio_gpu,
    /// with drm and its helpers from modules.dep.
    static let displayModules = ["virtio_gpu"]

    /// Loaded (likewise) only when the VM has a virtio-snd (PCI 1af4:1059), from
    /// /etc/modules-sound.load: virtio_snd with snd-pcm, snd-timer, snd and soundcore.
    static let soundModules = ["virtio_snd"]

    /// Loaded (likewise) only when the VM has a virtio-blk disk (PCI 1af4:1001 transitional,
    /// 1042 modern), from /etc/modules-disk.load: the driver and ext4 (with jbd2, mbcache, crc16;
    /// crc32c_generic too: ext4 asks the crypto API for it, which modules.dep does not say).
    static let diskModules = ["virtio_blk", "ext4", "crc32c_generic"]

    /// Loaded (likewise) only when the VM has a USB controller (PCI class 0x0c03), from
    /// /etc/modules-usb.load: the xHCI and EHCI host drivers, mass storage (usb-storage,
    /// uas, sd_mod for /dev/sdX) and HID, with usbcore and scsi_mod. There is no udev to
    /// load a driver when a device is plugged in later, so all load with the controller.
    static let usbModules = ["xhci_pci", "ehci_pci", "usb_storage", "uas", "sd_mod", "usbhid"]

    /// ALSA's configuration, which libasound reads before it opens any device
    /// (aplay and arecord fail without it); the guest gets Debian's copy.
    static let alsaConfig = "/usr/share/alsa/alsa.conf"

    /// The embedded guest has one sound card and none of Debian's per-card files: its
    /// "default" device is that card through the plug converter, so plain `aplay FILE`
    /// and `arecord` work. Loaded by alsa.conf's hook.
    static let asoundConf = """
        pcm.!default { type plug slave.pcm "hw:0,0" }
        ctl.!default { type hw card 0 }

        """

    static let agentPath = "/sbin/guest-agent"

    /// tty1 (the SPICE screen, fbcon on the virtio-gpu) gets a root shell, respawned, so
    /// a person at a SPICE client can type at once; there is no login (the guest is the
    /// person's own throwaway machine, reachable only through hostvmm's channels).
    static let inittab = """
        ::sysinit:/etc/init.d/rcS
        tty1::respawn:/bin/cttyhack /bin/sh -l
        ::respawn:\(agentPath) -m virtio-serial -p /dev/virtio-ports/org.qemu.guest_agent.0
        ::ctrlaltdel:/sbin/reboot
        ::shutdown:/etc/init.d/rcK

        """

    static let rcS = """
        #!/bin/sh
        # hostvmm embedded guest: early userspace.
        /bin/busybox --install -s
        export PATH=/sbin:/bin:/usr/sbin:/usr/bin
        mount -t proc proc /proc
        mount -t sysfs sysfs /sys
        mount -t devtmpfs devtmpfs /dev 2>/dev/null
        mkdir -p /dev/pts /dev/virtio-ports /run /tmp /var/run
        mount -t tmpfs -o mode=0755 tmpfs /run
        mount -t tmpfs tmpfs /tmp
        ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up
        while read -r module; do
            insmod "/lib/modules/$module" || echo "rcS: cannot load $module"
        done < /etc/modules.load
        # Modules of devices the VM may not have: only when the PCI device is there.
        load_for_pci() {
            for dev in /sys/bus/pci/devices/*; do
                if [ "$(cat "$dev/vendor")" = 0x1af4 ] && [ "$(cat "$dev/device")" = "$1" ]; then
                    while read -r module; do
                        insmod "/lib/modules/$module" || echo "rcS: cannot load $module"
                    done < "$2"
                    return 0
                fi
            done
            return 1
        }
        load_for_pci 0x1050 /etc/modules-display.load
        load_for_pci 0x1059 /etc/modules-sound.load
        load_for_pci 0x1001 /etc/modules-disk.load || load_for_pci 0x1042 /etc/modules-disk.load
        for dev in /sys/bus/pci/devices/*; do
            case "$(cat "$dev/class")" in
            0x0c03*)
                while read -r module; do
                    insmod "/lib/modules/$module" || echo "rcS: cannot load $module"
                done < /etc/modules-usb.load
                break ;;
            esac
        done
        # The NIC, if the VM has one: DHCP in the background (QEMU's user network answers at once).
        if [ -e /sys/class/net/eth0 ]; then
            ip link set eth0 up
            udhcpc -i eth0 -s /etc/udhcpc.script -b -q -t 10 -T 1 >/dev/null 2>&1
        fi
        # /dev/virtio-ports/NAME, as udev's 50-udev-default.rules would make them.
        # A port's name arrives by a control message after probe: wait briefly.
        for port in /sys/class/virtio-ports/vport*; do
            [ -e "$port" ] || continue
            tries=0
            while [ ! -s "$port/name" ] && [ $tries -lt 20 ]; do sleep 0.1; tries=$((tries + 1)); done
            [ -s "$port/name" ] && ln -sf "/dev/${port##*/}" "/dev/virtio-ports/$(cat "$port/name")"
        done
        mkdir -p /var/log
        acpid -c /etc/acpi -l /run/acpid.log -p /run/acpid.pid
        echo "hostvmm-guest: init done"
        # With a display (virtio-gpu, fbcon), say it on the screen too: /dev/console is ttyS0.
        # A blinking cursor makes fbdev send the whole 3 MiB frame to the device at each
        # blink, which doubled an idle TCG guest's CPU; the cursor stays, without blinking.
        if [ -e /sys/class/graphics/fb0 ]; then
            echo 0 > /sys/class/graphics/fbcon/cursor_blink
            echo "hostvmm-guest: init done" > /dev/tty0
        fi

        """

    /// busybox udhcpc's hook: configures the lease (it exports interface, ip, mask as a
    /// prefix length, router, dns).
    static let udhcpcScript = """
        #!/bin/sh
        case "$1" in
        deconfig)
            ip addr flush dev "$interface"
            ip link set "$interface" up
            ;;
        bound|renew)
            ip addr flush dev "$interface"
            ip addr add "$ip/${mask:-24}" dev "$interface"
            if [ -n "$router" ]; then
                ip route add default via "${router%% *}" dev "$interface"
            fi
            : > /etc/resolv.conf
            for server in $dns; do echo "nameserver $server" >> /etc/resolv.conf; done
            ;;
        esac
        exit 0

        """

    static let rcK = """
        #!/bin/sh
        echo "hostvmm-guest: shutting down"
        sync

        """

    /// What guest-get-osinfo reports for this guest.
    static let osRelease = """
        NAME="hostvmm embedded guest"
        ID=hostvmm-embedded
        PRETTY_NAME="hostvmm embedded guest (busybox, Debian kernel)"
        VERSION_ID=1

        """

    /// Accounts, as a distribution has them: root only. Its password is locked ('*'): tty1
    /// has a root shell without login, and a host sets one with guest-set-user-password.
    static let passwd = "root:x:0:0:root:/root:/bin/sh\n"
    static let group = "root:x:0:\nshadow:x:42:\n"
    static let shadow = "root:*:19000:0:99999:7:::\n"

    /// shutdown(8) for stock agents, which run it as distributions have it: qemu-ga runs
    /// `/sbin/shutdown -h -P|-H|-r +0 MESSAGE` (our agent too, where the file exists).
    /// busybox has poweroff, halt and reboot, which ask init. Only "now" is offered:
    /// a time other than +0/now is refused rather than ignored. The message is not used.
    static let shutdown = """
        #!/bin/sh
        action=poweroff
        for arg in "$@"; do
            case "$arg" in
            -r|--reboot) action=reboot ;;
            -H|--halt) [ "$action" = reboot ] || action=halt ;;
            -h|-P|--poweroff) ;;
            now|+0) ;;
            +*|*:*) echo "shutdown: only an immediate shutdown (now, +0) is supported" >&2; exit 1 ;;
            -*) echo "shutdown: unknown option $arg" >&2; exit 1 ;;
            esac
        done
        exec /bin/busybox "$action"

        """

    /// chpasswd(8) for stock agents (qemu-ga's guest-set-user-password writes "user:password"
    /// lines to it, and runs it with -e when the password is already a hash); busybox has
    /// none. SHA-512 through busybox mkpasswd, /etc/shadow replaced atomically. Input stays
    /// in quoted variables and awk's ENVIRON: nothing from it is evaluated or used as a pattern.
    static let chpasswd = """
        #!/bin/sh
        encrypted=no
        for arg in "$@"; do
            case "$arg" in
            -e|--encrypted) encrypted=yes ;;
            *) echo "chpasswd: unknown option $arg" >&2; exit 1 ;;
            esac
        done
        status=0
        line_number=0
        while IFS= read -r line || [ -n "$line" ]; do
            line_number=$((line_number + 1))
            user=${line%%:*}
            password=${line#*:}
            if [ -z "$user" ] || [ "$user" = "$line" ]; then
                echo "chpasswd: line $line_number: missing new password" >&2; status=1; continue
            fi
            if ! CHPASSWD_USER=$user awk -F: '$1 == ENVIRON["CHPASSWD_USER"] { found = 1 } END { exit !found }' /etc/passwd; then
                echo "chpasswd: line $line_number: user does not exist" >&2; status=1; continue
            fi
            if [ "$encrypted" = yes ]; then
                hash=$password
            else
                hash=$(printf '%s\n' "$password" | mkpasswd -P 0 -m sha512) || { status=1; continue; }
            fi
            CHPASSWD_USER=$user CHPASSWD_HASH=$hash CHPASSWD_DAY=$(($(date +%s) / 86400)) awk -F: -v OFS=: '
                $1 == ENVIRON["CHPASSWD_USER"] && !done { $2 = ENVIRON["CHPASSWD_HASH"]; $3 = ENVIRON["CHPASSWD_DAY"]; done = 1 }
                { print }
                END { if (!done) print ENVIRON["CHPASSWD_USER"] ":" ENVIRON["CHPASSWD_HASH"] ":" ENVIRON["CHPASSWD_DAY"] ":0:99999:7:::" }
            ' /etc/shadow > /etc/shadow.chpasswd && chmod 600 /etc/shadow.chpasswd && mv /etc/shadow.chpasswd /etc/shadow || status=1
        done
        exit $status

        """

    /// busybox acpid maps the power button to /etc/acpi/PWRF/00000080.
    static let powerButton = """
        #!/bin/sh
        exec /sbin/poweroff

        """
}
