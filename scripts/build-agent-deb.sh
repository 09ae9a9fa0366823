#!/usr/bin/env bash
# Builds a Debian package of guest-agent for people's guests (issue #15):
#   hostvmm-guest-agent_VERSION_amd64.deb in OUTDIR (default .build-deb/), path printed last.
#
# Usage: scripts/build-agent-deb.sh [--agent BINARY] [OUTDIR]
#   --agent  pack this guest-agent binary (default: `hostvmm image agent` builds the
#            fully static one the images carry).
#
# What the package is:
# - /usr/sbin/guest-agent (static: Depends on nothing), /usr/sbin/qemu-ga -> guest-agent
#   (it takes qemu-ga's options and config file, so scripts that run qemu-ga keep working);
# - guest-agent.service + 60-guest-agent.rules from packaging/ (udev starts the unit when
#   the org.qemu.guest_agent.0 port appears, as Debian's qemu-guest-agent does);
# - /etc/default/guest-agent (a conffile): --no-spice-agent, so the SPICE agent port stays
#   with spice-vdagent unless the person asks for ours (the file says how);
# - Conflicts/Replaces/Provides qemu-guest-agent: `dpkg -i` removes Debian's agent.
# Version: the agent's own (AgentVersion) + the commit's UTC time and id, so every commit
# upgrades the one before it.
set -euo pipefail
cd "$(dirname "$0")/.."
agent=""
outdir=.build-deb
while [ $# -gt 0 ]; do
    case "$1" in
    --agent) agent=${2:?--agent needs a path}; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "build-agent-deb: unknown option $1" >&2; exit 2 ;;
    *) outdir=$1; shift ;;
    esac
done
command -v dpkg-deb >/dev/null || { echo "build-agent-deb: dpkg-deb is missing (apt-get install dpkg)" >&2; exit 1; }
if [ -z "$agent" ]; then
    swift build --product hostvmm >&2
    agent=$(.build/debug/hostvmm image agent)
fi
[ -x "$agent" ] || { echo "build-agent-deb: $agent is not an executable" >&2; exit 1; }
if ldd "$agent" >/dev/null 2>&1; then
    echo "build-agent-deb: $agent is dynamically linked; the package carries the static build" >&2
    exit 1
fi

base_version=$(sed -n 's/.*static let string = "\(.*\)".*/\1/p' Sources/GuestAgent/AgentConfig.swift)
[ -n "$base_version" ] || { echo "build-agent-deb: cannot read AgentVersion from Sources/GuestAgent/AgentConfig.swift" >&2; exit 1; }
if git rev-parse --git-dir >/dev/null 2>&1; then
    stamp=$(TZ=UTC git log -1 --date=format-local:%Y%m%d%H%M --format=%cd)
    commit=$(git rev-parse --short=8 HEAD)
    version="$base_version+git$stamp.$commit"
    git diff --quiet HEAD -- Sources packaging || version="$version.dirty"
else
    version=$base_version
fi

staging=$(mktemp -d)
trap 'rm -rf "$staging"' EXIT
root=$staging/root
install -D -m 0755 "$agent" "$root/usr/sbin/guest-agent"
ln -s guest-agent "$root/usr/sbin/qemu-ga"
install -D -m 0644 packaging/guest-agent.service "$root/lib/systemd/system/guest-agent.service"
install -D -m 0644 packaging/60-guest-agent.rules "$root/lib/udev/rules.d/60-guest-agent.rules"
install -D -m 0644 packaging/guest-agent.default "$root/etc/default/guest-agent"
install -d "$root/usr/share/doc/hostvmm-guest-agent"
install -m 0644 protocol.md "$root/usr/share/doc/hostvmm-guest-agent/protocol.md"
gzip -9n "$root/usr/share/doc/hostvmm-guest-agent/protocol.md"

install -d "$root/DEBIAN"
installed_kib=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<EOF
Package: hostvmm-guest-agent
Version: $version
Architecture: amd64
Maintainer: hostvmm developers <hostvmm@localhost>
Installed-Size: $installed_kib
Section: admin
Priority: optional
Conflicts: qemu-guest-agent
Replaces: qemu-guest-agent
Provides: qemu-guest-agent
Description: hostvmm guest agent (qemu-guest-agent and SPICE agent protocols)
 One static binary that speaks the qemu-guest-agent protocol with qemu-ga's
 command set, options and config file, so libvirt, virsh and other QGA
 clients drive it as they drive qemu-ga; and the SPICE agent protocol
 (clipboard, monitors config, lock on client disconnect), which this package
 leaves off by default so that spice-vdagent keeps the SPICE port
 (/etc/default/guest-agent says how to switch).
EOF
echo /etc/default/guest-agent > "$root/DEBIAN/conffiles"
# Maintainer scripts: systemd only where it runs (a busybox guest has none); the unit
# starts through udev when the port exists, so postinst asks udev to replay the port.
cat > "$root/DEBIAN/postinst" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = configure ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
    udevadm control --reload-rules 2>/dev/null || true
    if [ -e /dev/virtio-ports/org.qemu.guest_agent.0 ]; then
        systemctl restart guest-agent.service || true
    fi
fi
exit 0
EOF
cat > "$root/DEBIAN/prerm" <<'EOF'
#!/bin/sh
set -e
if [ -d /run/systemd/system ] && [ "$1" = remove ]; then
    systemctl stop guest-agent.service || true
fi
exit 0
EOF
cat > "$root/DEBIAN/postrm" <<'EOF'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
fi
exit 0
EOF
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm" "$root/DEBIAN/postrm"
mkdir -p "$outdir"
deb="$outdir/hostvmm-guest-agent_${version}_amd64.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >&2
echo "$deb"
