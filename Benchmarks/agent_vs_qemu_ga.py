#!/usr/bin/env python3
"""Our guest-agent against the real qemu-ga, side by side in one run.

Both run on the host in unix-listen mode (the transport qemu-ga's own tests
use), so the figures compare the agents, not virtio or TCG. Measures:
  - start-up: exec to the first answered guest-sync (median of 20 starts)
  - round trips of guest-ping, guest-info and guest-get-osinfo, one client;
    the two agents take turns in batches of 100 so that machine noise hits both
  - peak resident memory (VmHWM) after the run
  - binary size, the same plus the shared libraries it loads, and their number
With --guest, also guest-ping through the whole chain into a TCG guest
(hostvmm's agent-ping, measured inside hostvmm).
Reports medians, p99 and ours/qemu-ga ratios (below 1.0: we are faster/smaller).

Usage: Benchmarks/agent_vs_qemu_ga.py [--agent PATH] [--qemu-ga PATH] [-n N] [--guest]
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


COMMANDS = ("guest-ping", "guest-info", "guest-get-osinfo")


class Agent:
    def __init__(self, name, argv, sock_path):
        self.name, self.argv, self.sock_path = name, argv, sock_path
        self.samples = {c: [] for c in COMMANDS}
        self.startups = []

    def start(self):
        t0 = time.monotonic()
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.client = Client(wait_for_socket(self.sock_path, self.proc))
        self.client.sync(4242)
        return (time.monotonic() - t0) * 1000

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=5)

    def batch(self, command, count):
        for _ in range(count):
            t0 = time.perf_counter_ns()
            reply = self.client.call(command)
            self.samples[command].append((time.perf_counter_ns() - t0) / 1000)
            if "return" not in reply:
                raise RuntimeError(f"{self.name} {command}: {reply}")

    def peak_rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            return int(next(l for l in f if l.startswith("VmHWM:")).split()[1])


def shared_library_paths(path):
    """The files ldd says `path` loads (none for a static executable)."""
    out = subprocess.run(["ldd", path], capture_output=True, text=True).stdout
    paths = []
    for line in out.splitlines():
        words = line.replace("=>", " ").split()
        paths += [w for w in words if w.startswith("/")][:1]
    return paths


def shared_libraries(path):
    return len(shared_library_paths(path))


def installed_size_kib(path):
    """The binary plus every shared library it loads: what a guest must carry to run it."""
    return sum(os.path.getsize(os.path.realpath(p)) for p in [path] + shared_library_paths(path)) / 1024


def median(xs):
    return statistics.median(xs)


def p99(xs):
    xs = sorted(xs)
    return xs[max(0, int(len(xs) * 0.99) - 1)]


def guest_ping(n):
    """agent-ping over hostvmm's control socket into a freshly booted guest."""
    hostvmm = os.path.join(ROOT, ".build/release/hostvmm")
    if not os.access(hostvmm, os.X_OK):
        hostvmm = os.path.join(ROOT, ".build/debug/hostvmm")
    env = dict(os.environ, HOSTVMM_STATE_DIR=tempfile.mkdtemp(prefix="bench-state-"))
    subprocess.run([hostvmm, "up", "--detach", "--name", "bench"], env=env, check=True, stdout=subprocess.DEVNULL)
    try:
        s = socket.socket(socket.AF_UNIX)
        s.connect(os.path.join(env["HOSTVMM_STATE_DIR"], "bench", "control.sock"))
        f = s.makefile("rb")
        f.readline()
        s.sendall(b'{"execute":"qmp_capabilities"}\n')
        f.readline()
        samples = []
        for i in range(n):
            s.sendall(json.dumps({"execute": "agent-ping", "id": i}).encode() + b"\n")
            while True:
                msg = json.loads(f.readline())
                if msg.get("id") == i:
                    samples.append(msg["return"]["round-trip-us"])
                    break
        return samples
    finally:
        subprocess.run([hostvmm, "down", "bench"], env=env, stdout=subprocess.DEVNULL)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agent", default=os.path.join(ROOT, ".build-guest/release/guest-agent"))
    parser.add_argument("--qemu-ga", default=shutil.which("qemu-ga") or "/usr/sbin/qemu-ga")
    parser.add_argument("-n", type=int, default=3000, help="round trips per command")
    parser.add_argument("--guest", action="store_true", help="also ping into a booted TCG guest")
    args = parser.parse_args()
    for path, pkg in ((args.agent, "hostvmm image build"), (args.qemu_ga, "apt-get install qemu-guest-agent")):
        if not os.access(path, os.X_OK):
            sys.exit(f"missing {path}: run {pkg} (scripts/setup.sh installs qemu-guest-agent)")

    with tempfile.TemporaryDirectory(prefix="agent-bench-") as tmp:
        ours = Agent("guest-agent", [args.agent, "-m", "unix-listen", "-p", f"{tmp}/ours.sock", "-t", tmp],
                     f"{tmp}/ours.sock")
        theirs = Agent("qemu-ga", [args.qemu_ga, "-m", "unix-listen", "-p", f"{tmp}/qga.sock", "-t", tmp],
                       f"{tmp}/qga.sock")
        for _ in range(20):
            for agent in (ours, theirs):
                agent.startups.append(agent.start())
                agent.stop()
        for agent in (ours, theirs):
            agent.start()
        for _ in range(max(1, args.n // 100)):
            for command in COMMANDS:
                ours.batch(command, 100)
                theirs.batch(command, 100)
        rss = (ours.peak_rss_kib(), theirs.peak_rss_kib())
        for agent in (ours, theirs):
            agent.stop()

    print(f"{'metric':30} {'guest-agent':>12} {'qemu-ga':>12} {'ratio':>7}")
    rows = [("start-up to first sync (ms)", median(ours.startups), median(theirs.startups))]
    for command in COMMANDS:
        rows.append((f"{command} median (us)", median(ours.samples[command]), median(theirs.samples[command])))
        rows.append((f"{command} p99 (us)", p99(ours.samples[command]), p99(theirs.samples[command])))
    rows.append(("peak RSS, VmHWM (KiB)", rss[0], rss[1]))
    rows.append(("binary size (KiB)", os.path.getsize(args.agent) / 1024, os.path.getsize(args.qemu_ga) / 1024))
    rows.append(("binary + shared libs (KiB)", installed_size_kib(args.agent), installed_size_kib(args.qemu_ga)))
    for label, a, b in rows:
        print(f"{label:30} {a:12.1f} {b:12.1f} {a / b:7.2f}")
    print(f"{'shared libraries loaded':30} {shared_libraries(args.agent):12d} {shared_libraries(args.qemu_ga):12d}")
    if args.guest:
        samples = guest_ping(max(100, args.n // 10))
        print(f"guest-ping into the TCG guest via hostvmm: median {median(samples):.0f} us, p99 {p99(samples):.0f} us "
              f"({len(samples)} pings)")


if __name__ == "__main__":
    main()
