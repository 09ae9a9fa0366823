#!/usr/bin/env bash
# README command 1: install what is missing, build, and boot the embedded default
# guest in the foreground (agent, SPICE-agent, pvpanic and balloon channels, and its
# screen, keyboard and pointer on the SPICE server).
# Extra arguments go to `hostvmm up` (e.g. --detach, --name, --memory).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "run: building hostvmm (release)"
swift build -c release --product hostvmm
exec .build/release/hostvmm up "$@"
