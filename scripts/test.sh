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
echo "test: running tests"
swift test --skip-build 2>&1
