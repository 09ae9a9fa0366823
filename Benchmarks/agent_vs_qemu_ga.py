#!/usr/bin/env python3
"""Our guest-agent against the real qemu-ga, side by side in one run.

Both run on the host in unix-listen mode (the transport qemu-ga's own tests
use), so the figures compare the agents, not virtio or TCG. Measures:
  - start-up: exec to the first answered guest-sync
  - round trip of guest-ping and guest-info, sequential, one client
  - peak resident memory (VmHWM) after the run
Reports medians, p99 and ours/qemu-ga ratios (below 1.0 means we are faster/smaller).

Usage: Benchmarks/agent_vs_qemu_ga.py [--agent PATH] [--qemu-ga PATH] [-n N]
The default agent is the static release build the guest image uses
(.build-guest/release/guest-agent; `hostvmm image build` makes it).
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def wait_for_socket(path, proc, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"agent exited with {proc.returncode}")
        s = socket.socket(socket.AF_UNIX)
        try:
            s.connect(path)
            return s
        except OSError:
            s.close()
            time.sleep(0.001)
    raise RuntimeError(f"no socket at {path} after {timeout} s")


class Client:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def line(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RuntimeError("agent closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line

    def call(self, execute, arguments=None):
        req = {"execute": execute}
        if arguments is not None:
            req["arguments"] = arguments
        self.sock.sendall(json.dumps(req).encode() + b"\n")
        return json.loads(self.line().lstrip(b"\xff"))

    def sync(self, ident):
        self.sock.sendall(b"\xff" + json.dumps(
            {"execute": "guest-sync-delimited", "arguments": {"id": ident}}).encode() + b"\n")
        while True:
            line = self.line()
            if line.startswith(b"\xff") and json.loads(line[1:]).get("return") == ident:
                return


def measure(name, argv, sock_path, n):
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = Client(wait_for_socket(sock_path, proc))
        client.sync(4242)
        startup = time.monotonic() - started
        results = {"startup_ms": startup * 1000}
        for command in ("guest-ping", "guest-info"):
            samples = []
            for _ in range(n):
                t0 = time.perf_counter_ns()
                reply = client.call(command)
                samples.append((time.perf_counter_ns() - t0) / 1000)
                if "return" not in reply:
                    raise RuntimeError(f"{name} {command}: {reply}")
            samples.sort()
            results[command] = {
                "median_us": statistics.median(samples),
                "p99_us": samples[int(len(samples) * 0.99) - 1],
            }
        with open(f"/proc/{proc.pid}/status") as f:
            hwm = next(l for l in f if l.startswith("VmHWM:"))
        results["peak_rss_kib"] = int(hwm.split()[1])
        return results
    finally:
        proc.terminate()
        proc.wait(timeout=5)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agent", default=os.path.join(ROOT, ".build-guest/release/guest-agent"))
    parser.add_argument("--qemu-ga", default=shutil.which("qemu-ga") or "/usr/sbin/qemu-ga")
    parser.add_argument("-n", type=int, default=3000, help="round trips per command")
    args = parser.parse_args()
    for path, pkg in ((args.agent, "hostvmm image build"), (args.qemu_ga, "apt-get install qemu-guest-agent")):
        if not os.access(path, os.X_OK):
            sys.exit(f"missing {path}: run {pkg} (scripts/setup.sh installs qemu-guest-agent)")

    with tempfile.TemporaryDirectory(prefix="agent-bench-") as tmp:
        ours = measure("guest-agent", [args.agent, "-m", "unix-listen", "-p", f"{tmp}/ours.sock"],
                       f"{tmp}/ours.sock", args.n)
        theirs = measure("qemu-ga", [args.qemu_ga, "-m", "unix-listen", "-p", f"{tmp}/qga.sock", "-t", tmp],
                         f"{tmp}/qga.sock", args.n)

    print(f"{'metric':28} {'guest-agent':>12} {'qemu-ga':>12} {'ratio':>7}")
    rows = [("start-up to first sync (ms)", ours["startup_ms"], theirs["startup_ms"])]
    for command in ("guest-ping", "guest-info"):
        for stat in ("median_us", "p99_us"):
            rows.append((f"{command} {stat.replace('_us', '')} (us)", ours[command][stat], theirs[command][stat]))
    rows.append(("peak RSS (KiB)", ours["peak_rss_kib"], theirs["peak_rss_kib"]))
    for label, a, b in rows:
        print(f"{label:28} {a:12.1f} {b:12.1f} {a / b:7.2f}")


if __name__ == "__main__":
    main()
