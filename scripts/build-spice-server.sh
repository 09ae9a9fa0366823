#!/usr/bin/env bash
# Builds Debian's own libspice-server source (the version installed) with one
# fix, into /usr/local/lib/hostvmm, where hostvmm's run path finds it before
# the system copy (Package.swift, SpiceBridge's linker settings).
#
# The fix: spice-server (0.15.1, and 0.15.2 unchanged) frees a display channel
# client while its worker thread still uses it when the client disconnects
# during the display channel's start-up. dcc_start() waits for the client's
# DISPLAY_INIT in display_channel_client_wait_for_init(), whose receive() can
# disconnect the client and drop the last reference; the next is_connected()
# then reads freed memory and the whole process (hostvmm, or QEMU) dies with
# SIGSEGV in the "SPICE Worker" thread. dcc_start() takes its own reference only
# after that wait; the fix takes it before. Measured: with Debian's library a
# client that connects and leaves at once killed hostvmm within 5-13
# connections (2 when clients leave the moment the channel links); with this build,
# 200 connections and hostvmm still serving.
#
# Idempotent: a stamp names the source version and fix revision; nothing is
# rebuilt while it matches. Needs root (apt, /usr/local). About 30 s of build.
set -euo pipefail

PREFIX=/usr/local/lib/hostvmm
FIX_REVISION=1
LOG_PREFIX="setup: spice-server"
source "$(dirname "$0")/apt.sh"
require_root

version=$(dpkg-query -W -f='${Version}' libspice-server1 2>/dev/null || true)
if [ -z "$version" ]; then
    log "libspice-server1 is not installed (scripts/setup.sh installs it first)" >&2
    exit 1
fi
want="spice $version, hostvmm fix $FIX_REVISION"
if [ -f "$PREFIX/libspice-server.stamp" ] && [ "$(cat "$PREFIX/libspice-server.stamp")" = "$want" ] \
   && [ -e "$PREFIX/libspice-server.so.1" ]; then
    log "fixed build of $version is current ($PREFIX)"
    exit 0
fi

# Debian's build dependencies for what we enable (no gstreamer, smartcard or SASL:
# hostvmm offers none of them), and dpkg-dev for `apt-get source`.
BUILD_PACKAGES=(dpkg-dev meson ninja-build pkg-config libglib2.0-dev libpixman-1-dev libspice-protocol-dev
    libssl-dev libjpeg-dev liblz4-dev libopus-dev zlib1g-dev python3-pyparsing python3-six)
mapfile -t missing < <(missing_packages "${BUILD_PACKAGES[@]}")

# Source comes through apt, which checks it against the signed Sources index.
if [ -z "$(find /var/lib/apt/lists -name '*bookworm_main_source_Sources*' 2>/dev/null | head -1)" ]; then
    src_list=/etc/apt/sources.list.d/hostvmm-deb-src.list
    # Ours, unless the machine already names Debian's bookworm sources (a list line or deb822).
    if [ ! -f "$src_list" ] && ! grep -rqsE '^deb-src .*debian/? bookworm main' /etc/apt/sources.list /etc/apt/sources.list.d/ \
        && ! grep -rqsE '^Types:.*deb-src' /etc/apt/sources.list.d/; then
        log "adding Debian source indices ($src_list)"
        # apt refuses one repository named with two different keyrings: reuse Debian's entries' one.
        keyring=$(grep -s -i -m1 '^Signed-By:' /etc/apt/sources.list.d/debian.sources | awk '{print $2}' || true)
        option=${keyring:+[signed-by=$keyring] }
        {
            echo "deb-src ${option}http://deb.debian.org/debian bookworm main"
            echo "deb-src ${option}http://deb.debian.org/debian bookworm-updates main"
            echo "deb-src ${option}http://deb.debian.org/debian-security bookworm-security main"
        } > "$src_list"
    fi
    log "apt-get update (source indices)"
    apt-get update -qq
fi
apt_install "build dependencies" "${missing[@]}"

work=$(mktemp -d /tmp/hostvmm-spice-build.XXXXXX)
trap 'rm -rf "$work"' EXIT
chmod 0755 "$work"  # apt downloads as _apt
cd "$work"
log "fetching Debian source spice=$version"
apt-get source -qq "spice=$version" >/dev/null
tree=$(find . -maxdepth 1 -type d -name 'spice-*' | head -1)
[ -n "$tree" ] || { log "apt-get source left no spice-* tree" >&2; exit 1; }
cd "$tree"

# Move dcc_start()'s reference above the wait (exactly one match each, or stop).
python3 - server/dcc.cpp <<'PY'
import sys
path = sys.argv[1]
text = open(path).read()
hold = "    red::shared_ptr<DisplayChannelClient> self(dcc);\n"
start = "void dcc_start(DisplayChannelClient *dcc)\n{\n    DisplayChannel *display = DCC_TO_DC(dcc);\n"
if text.count(hold) != 1 or text.count(start) != 1:
    sys.exit("setup: spice-server: dcc_start() is not as expected; the fix was not applied")
text = text.replace(hold, "").replace(start, start + hold)
open(path, "w").write(text)
PY

log "building (meson, release)"
meson setup build --buildtype=release -Dgstreamer=no -Dsmartcard=disabled -Dsasl=false -Dmanual=false \
    -Dtests=false -Dlz4=true -Dopus=enabled >build.log 2>&1 || { tail -20 build.log >&2; exit 1; }
ninja -C build >>build.log 2>&1 || { tail -20 build.log >&2; exit 1; }

lib=$(find build/server -maxdepth 1 -type f -name 'libspice-server.so.1.*' | head -1)
[ -n "$lib" ] || { log "the build made no libspice-server.so.1.*" >&2; exit 1; }
install -d -m 0755 "$PREFIX"
install -m 0644 "$lib" "$PREFIX/"
ln -sf "$(basename "$lib")" "$PREFIX/libspice-server.so.1"
echo "$want" > "$PREFIX/libspice-server.stamp"
log "installed $PREFIX/$(basename "$lib") ($want)"
