#!/usr/bin/env bash
# Installs every Debian package hostvmm and its tests need, on a bare machine of
# this kind (Debian bookworm + Swift at /opt/swift). Idempotent: a package that is
# already there is not installed again. Run as root.
set -euo pipefail

# Debian packages: QEMU 10 from bookworm-backports (the 6.12 guest kernel comes
# from there too, downloaded by `hostvmm image build`), the tools the image
# builder calls, the X11 client libraries guest-agent links statically (its
# X11 clipboard), and Xvfb + xclip for the X11 clipboard tests.
# The desktop image (`hostvmm image build --image desktop`) adds debootstrap
# and e2fsprogs (mkfs.ext4 -d); each desktop VM's disk overlay needs qemu-img.
# python3-cryptography: the hostile SPICE client in the tests encrypts the ticket.
# virt-viewer (remote-viewer) and xdotool: the test of what a person sees and types.
# qemu-system-modules-opengl carries QEMU's D-Bus display (ui-dbus.so), the channel
# through which `--display` passes a client's window size to the running guest;
# qemu-system-modules-spice is QEMU's own SPICE, the reference in Benchmarks/display_fps.py.
# Audio (issue #12): libpulse-dev for hostvmm's PulseAudio backend; alsa-utils gives the
# embedded guest Debian's aplay/arecord (the image builder copies them and their libraries);
# pulseaudio + pulseaudio-utils (parec) are the tests' sound server, sox makes test tones and
# python3-numpy finds a recording's frequency and level (Tests/HostVMMTests/Clients/tone.py).
# USB (issue #13): libusb-1.0-0-dev and libusbredirhost-dev (with libusbredirparser-dev) for
# host devices, hostvmm's usbredir stream guard and filters.
# Disks (issue #14): ovmf for --firmware uefi; the tests build bootable disk images without
# root with fdisk (sfdisk), dosfstools, mtools, syslinux (+ -common) and systemd-boot-efi, and a
# bootable installer-style CD with isolinux and xorriso.
# Stock agents (issue #15): libvirt 11 from bookworm-backports (libvirtd, virtlogd, virsh, the
# QEMU driver), each package named with its release so that nothing else (systemd) moves to
# backports; the tests start the daemons themselves. dpkg-dev: scripts/build-agent-deb.sh.
# gstreamer1.0-plugins-base: the appsrc and volume elements spice_audio.py gives spice-gtk as its sink
# (without them spice-gtk reports no client volume to the guest agent).
# spice-vdagent: Debian's SPICE agent daemons, run by the tests on the host under Xvfb.
# gdb: PanicEndToEndTests and Benchmarks/vmcore.py read a kernel symbol from vmcores (issue #17).
# Hardening (issue #16): libseccomp-dev for the seccomp filter on spice-server's worker thread.
BACKPORTS_PACKAGES=(qemu-system-x86 qemu-guest-agent qemu-utils qemu-system-modules-opengl qemu-system-modules-spice)
BACKPORTS_PINNED=(libvirt0 libvirt-common libvirt-clients libvirt-daemon libvirt-daemon-common libvirt-daemon-log
    libvirt-daemon-driver-qemu)
PACKAGES=(kmod busybox-static cpio xz-utils zstd python3 ca-certificates systemd debootstrap e2fsprogs tar
    libspice-server-dev pkg-config spice-client-gtk gir1.2-spiceclientglib-2.0 python3-gi python3-cryptography
    libx11-dev libxfixes-dev libxcb1-dev libxau-dev libxdmcp-dev xvfb xclip virt-viewer xdotool
    libpulse-dev alsa-utils pulseaudio pulseaudio-utils sox python3-numpy gstreamer1.0-plugins-base
    libusb-1.0-0-dev libusbredirhost-dev libusbredirparser-dev
    ovmf fdisk dosfstools mtools syslinux syslinux-common systemd-boot-efi isolinux xorriso dpkg-dev spice-vdagent
    libseccomp-dev gdb)

LOG_PREFIX=setup
source "$(dirname "$0")/apt.sh"
require_root

list=/etc/apt/sources.list.d/bookworm-backports.list
if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    log "adding bookworm-backports to $list"
    echo 'deb http://deb.debian.org/debian bookworm-backports main' > "$list"
    NEED_UPDATE=1
fi

mapfile -t missing < <(missing_packages "${PACKAGES[@]}")
missing_bp=()
for p in "${BACKPORTS_PACKAGES[@]}"; do
    v=$(dpkg-query -W -f='${Version}' "$p" 2>/dev/null || true)
    case "$v" in *bpo*) ;; *) missing_bp+=("$p") ;; esac
done
missing_pinned=()
for p in "${BACKPORTS_PINNED[@]}"; do
    v=$(dpkg-query -W -f='${Version}' "$p" 2>/dev/null || true)
    case "$v" in *bpo*) ;; *) missing_pinned+=("$p/bookworm-backports") ;; esac
done

if [ ${#missing[@]} -gt 0 ] || [ ${#missing_bp[@]} -gt 0 ] || [ ${#missing_pinned[@]} -gt 0 ] || [ -n "${NEED_UPDATE:-}" ] \
   || [ -z "$(find /var/lib/apt/lists -name '*bookworm-backports*Packages*' 2>/dev/null | head -1)" ]; then
    log "apt-get update"
    apt-get update -qq
fi
apt_install "packages" "${missing[@]}"
apt_install "from bookworm-backports" -t bookworm-backports -- "${missing_bp[@]}"
apt_install "libvirt from bookworm-backports" "${missing_pinned[@]}"
# qemu-guest-agent's package starts a service; we only use its binary.
systemctl disable --now qemu-guest-agent >/dev/null 2>&1 || true

log "qemu: $(qemu-system-x86_64 --version | head -1)"

# QEMU's own Python QMP library (PyPI qemu.qmp: QMPClient, qmp-shell), which the tests run
# against the control socket, in a venv of Debian's python3 (its system site is not pip's).
QMP_VENV=/usr/local/lib/hostvmm/qmp-venv
QMP_VERSION=0.0.6
if ! "$QMP_VENV/bin/python" -c "import qemu.qmp, importlib.metadata as m; assert m.version('qemu.qmp') == '$QMP_VERSION'" 2>/dev/null; then
    log "installing qemu.qmp $QMP_VERSION into $QMP_VENV"
    missing_venv=$(missing_packages python3-venv)
    [ -z "$missing_venv" ] || apt_install "packages" python3-venv
    /usr/bin/python3 -m venv "$QMP_VENV"
    "$QMP_VENV/bin/pip" install -q --disable-pip-version-check "qemu.qmp==$QMP_VERSION"
fi

# Debian's libspice-server rebuilt with the fix for a crash when a SPICE client leaves
# while its display channel starts (scripts/build-spice-server.sh says why). hostvmm
# still runs without it, on the system copy, and says so; the tests fail.
if ! bash "$(dirname "$0")/build-spice-server.sh"; then
    log "WARNING: could not build the fixed libspice-server; hostvmm will use Debian's," \
        "which crashes when a client leaves during display setup"
fi
