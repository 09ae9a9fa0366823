#!/usr/bin/env bash
# Installs guest-agent into a root filesystem the way Debian installs
# qemu-guest-agent: binary in /usr/sbin, systemd unit, udev rule.
# Usage: packaging/install.sh GUEST_AGENT_BINARY [ROOT]   (ROOT defaults to /)
set -euo pipefail
binary=${1:?usage: install.sh GUEST_AGENT_BINARY [ROOT]}
root=${2:-/}
here=$(dirname "$0")
install -D -m 0755 "$binary" "$root/usr/sbin/guest-agent"
install -D -m 0644 "$here/guest-agent.service" "$root/lib/systemd/system/guest-agent.service"
install -D -m 0644 "$here/60-guest-agent.rules" "$root/lib/udev/rules.d/60-guest-agent.rules"
echo "installed guest-agent into $root"
