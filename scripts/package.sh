#!/usr/bin/env bash
# Builds a Debian package of hostvmm for hosts without the Swift toolchain (issue #17):
#   hostvmm_VERSION_amd64.deb in OUTDIR (default .build-deb/), path printed last.
#
# Usage: scripts/package.sh [OUTDIR]      (after scripts/setup.sh)
#
# What the package is:
# - /usr/bin/hostvmm: a release build with the Swift runtime and Foundation linked in
#   (--static-swift-stdlib), so it loads only Debian's libraries (ldd names no toolchain);
# - /usr/lib/hostvmm/libspice-server.so.1: the fixed spice-server (build-spice-server.sh),
#   found through the binary's run path $ORIGIN/../lib/hostvmm;
# - /usr/lib/hostvmm/guest-agent: the static agent the embedded image carries, so `hostvmm
#   up` builds that image without `swift build` (AgentBuild.bundledAgent);
# - Depends: the packages that own the libraries it loads (found with ldd and dpkg -S),
#   plus what it runs: QEMU 10, busybox-static, kmod, alsa-utils (aplay in the image),
#   xz-utils, apt and dpkg (the kernel package is fetched with apt-get download).
# No maintainer scripts: nothing to start, nothing to migrate.
# Version: 0.<commit's UTC time>.<commit id> (.dirty with uncommitted source changes).
set -euo pipefail
cd "$(dirname "$0")/.."
outdir=${1:-.build-deb}
case "$outdir" in -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
for tool in dpkg-deb dpkg ldd objdump; do
    command -v "$tool" >/dev/null || { echo "package: $tool is missing (scripts/setup.sh installs it)" >&2; exit 1; }
done
spice=/usr/local/lib/hostvmm/libspice-server.so.1
[ -e "$spice" ] || { echo "package: no fixed $spice (run scripts/build-spice-server.sh)" >&2; exit 1; }

echo "package: building hostvmm (release, static Swift runtime; scratch .build-package)" >&2
swift build -c release --static-swift-stdlib --product hostvmm --scratch-path .build-package >&2
hostvmm=$(swift build -c release --static-swift-stdlib --product hostvmm --scratch-path .build-package --show-bin-path)/hostvmm
echo "package: building the static guest-agent" >&2
agent=$("$hostvmm" image agent)

if git rev-parse --git-dir >/dev/null 2>&1; then
    version="0.$(TZ=UTC git log -1 --date=format-local:%Y%m%d%H%M --format=%cd).$(git rev-parse --short=8 HEAD)"
    git diff --quiet HEAD -- Sources Package.swift || version="$version.dirty"
else
    version=0.0
fi

staging=$(mktemp -d)
trap 'rm -rf "$staging"' EXIT
root=$staging/root
install -D -m 0755 "$hostvmm" "$root/usr/bin/hostvmm"
install -D -m 0755 "$agent" "$root/usr/lib/hostvmm/guest-agent"
install -m 0644 "$(readlink -f "$spice")" "$root/usr/lib/hostvmm/libspice-server.so.1"
install -d "$root/lib/systemd/system"
sed 's|/usr/local/bin/hostvmm|/usr/bin/hostvmm|g' packaging/hostvmm@.service > "$root/lib/systemd/system/hostvmm@.service"
install -d "$root/usr/share/doc/hostvmm"
for doc in README.md protocol.md docs/*.md; do
    install -m 0644 "$doc" "$root/usr/share/doc/hostvmm/$(basename "$doc")"
done

# Depends: the owners of the libraries the binary and our spice-server name (NEEDED; what
# those pull in comes with their packages), then the programs hostvmm runs.
resolved=$(LD_LIBRARY_PATH="$root/usr/lib/hostvmm" ldd "$root/usr/bin/hostvmm" "$root/usr/lib/hostvmm/libspice-server.so.1")
if echo "$resolved" | grep -q '=> /opt/'; then
    echo "package: the binary still loads from the toolchain:" >&2
    echo "$resolved" | grep '=> /opt/' >&2
    exit 1
fi
needed=$(objdump -p "$root/usr/bin/hostvmm" "$root/usr/lib/hostvmm/libspice-server.so.1" | awk '$1 == "NEEDED" {print $2}' | sort -u)
owners=$(for soname in $needed; do
    lib=$(echo "$resolved" | awk -v s="$soname" '$1 == s && $2 == "=>" {print $3; exit}')
    case "$lib" in ""|"$root"/*) continue ;; esac
    dpkg -S "$lib" 2>/dev/null || dpkg -S "$(readlink -f "$lib")" 2>/dev/null || true
done | cut -d: -f1 | sort -u)
depends=$(printf '%s, ' $owners)
depends="${depends}qemu-system-x86 (>= 1:10.0), busybox-static, kmod, alsa-utils, xz-utils, apt, dpkg"

install -d "$root/DEBIAN"
installed_kib=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<EOF
Package: hostvmm
Version: $version
Architecture: amd64
Maintainer: hostvmm developers <hostvmm@localhost>
Installed-Size: $installed_kib
Depends: $depends
Section: admin
Priority: optional
Description: Linux VMs with their paravirtual channels on QEMU, served to SPICE clients
 hostvmm boots a QEMU/KVM (or TCG) guest with a guest agent speaking the
 qemu-guest-agent and SPICE agent protocols, its own virtio display, input and
 sound devices served to SPICE clients, USB redirection, and crash capture
 (pvpanic, crash bundles with a vmcore written straight from guest memory).
 This package carries a static guest-agent, so "hostvmm up" builds its
 embedded guest image without a Swift toolchain.
EOF
mkdir -p "$outdir"
deb="$outdir/hostvmm_${version}_amd64.deb"
dpkg-deb --root-owner-group --build "$root" "$deb" >/dev/null
echo "package: $(du -h "$deb" | cut -f1) $(dpkg-deb -f "$deb" Package Version | tr '\n' ' ')" >&2
echo "$deb"
