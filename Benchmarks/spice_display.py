#!/usr/bin/env python3
"""SPICE display throughput and latency: full 1024x768 frames from an
in-process SpiceDisplay (no VM) to one spice-gtk client.

Runs the gated test SpiceDisplayBenchmark (HOSTVMM_SPICE_BENCH=1) from an
already built test bundle (`swift build --build-tests` first) and prints its
result lines: frames produced and seen per second, and the time from
SpiceDisplay.flush to the client's first invalidate showing the frame, for a
compressible "desktop" frame and for incompressible noise. Debug build:
the producer side is unoptimised.
"""
import os
import subprocess
import sys

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
env = dict(os.environ, HOSTVMM_SPICE_BENCH="1")
out = subprocess.run(["swift", "test", "--skip-build", "--filter", "SpiceDisplayBenchmark"],
                     cwd=root, env=env, capture_output=True, text=True)
lines = [l for l in (out.stdout + out.stderr).splitlines() if "spice display bench" in l or "✘" in l]
print("\n".join(lines) if lines else out.stdout + out.stderr)
sys.exit(out.returncode)
