#!/usr/bin/env bash
# README command 2: install what is missing, build, and run the whole test suite
# (unit tests, the guest agent as a process, and end-to-end boots of the real
# guest under QEMU). Exits non-zero if any test fails.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "test: building (debug)"
swift build --build-tests
# The end-to-end tests boot this image; building it here keeps its progress
# visible and outside the tests' time bounds.
.build/debug/hostvmm image build
# The desktop guest's first build runs debootstrap (~1-2 min, needs the network).
.build/debug/hostvmm image build --image desktop
# The .deb's release build (HostVMMPackageTests) here, before the tests run in parallel:
# in the test it is then a no-op rebuild, not two busy cores under booting guests.
echo "test: building the hostvmm package (release, static Swift runtime)"
bash scripts/package.sh >/dev/null
echo "test: running tests"
swift test --skip-build 2>&1
# Hardening (docs/hardening.md): every fuzz target for 30 s, so a broken harness or a
# regression in a parser is caught; then the faults on a running VM, fewer of each
# than the full run (scripts/faults.py with no options) but every kind.
echo "test: fuzz smoke (30 s per target)"
bash scripts/fuzz.sh 30
echo "test: fault injection"
/usr/bin/python3 scripts/faults.py --agent-kills 10 --control-cycles 200 --garbage-clients 20 --spice-cycles 100
