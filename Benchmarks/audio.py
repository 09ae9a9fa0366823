#!/usr/bin/python3
"""Guest sound to a SPICE client: hostvmm's stack (vhost-user-snd-pci -> our
VirtioSound device -> SpiceBridge's playback channel) against QEMU's own
virtio-sound-pci with -audiodev spice, same embedded guest, same workload, in
one run.

- Latency: the host asks the guest (guest-exec) to `aplay` a click (20 ms of
  1 kHz near full scale, then silence); a spice-gtk client
  (Tests/HostVMMTests/Clients/spice_audio.py "clicks") timestamps the first
  loud packet. The figure includes guest-exec and aplay's start, the same for
  both stacks; the difference between them is the audio path.
- CPU: utime+stime of hostvmm and QEMU (ours) or QEMU (reference) while the
  guest plays SECONDS of a tone, less the same processes' idle rate measured
  just before, per second of audio.
- Underruns: aplay's "underrun!!!" reports in the guest, and dropouts the
  client hears (10 ms blocks below -40 dBFS inside the tone).

Usage: Benchmarks/audio.py [SECONDS] (default 60). Needs a built hostvmm and image,
sox, Debian's /usr/bin/python3 with gi and numpy, and qemu-system-modules-spice.
Measure a release build (HOSTVMM=.build/release/hostvmm, `swift build -c release`): the
debug build's sample loops are several times slower. The agent is reached through
hostvmm's control socket (ours) and QEMU's agent socket (reference), both kept open.
"""
import base64
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_vm import cpu_seconds, ours_vm, qemu_has_spice, reference_vm, run_in_guest  # noqa: E402

CLIENT = f"{ROOT}/Tests/HostVMMTests/Clients/spice_audio.py"
SECONDS = float(sys.argv[1]) if len(sys.argv) > 1 else 60.0
CLICKS = 8


def sox(path, *effects):
    subprocess.run(["sox", "-n", "-r", "48000", "-e", "signed", "-b", "16", "-c", "2", path, *effects], check=True)


def put(agent, path, data):
    handle = agent({"execute": "guest-file-open", "arguments": {"path": path, "mode": "w"}})["return"]
    for i in range(0, len(data), 48 << 10):
        agent({"execute": "guest-file-write",
               "arguments": {"handle": handle, "buf-b64": base64.b64encode(data[i:i + (48 << 10)]).decode()}})
    agent({"execute": "guest-file-close", "arguments": {"handle": handle}})


class Client:
    """A spice_audio.py client whose lines are collected with their arrival."""

    def __init__(self, *args):
        self.proc = subprocess.Popen(["/usr/bin/python3", CLIENT, *args], stdout=subprocess.PIPE, text=True)
        self.lines = []
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            with self.cond:
                self.lines.append(line.strip())
                self.cond.notify_all()

    def wait_for(self, prefix, after=0, timeout=30):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for line in self.lines[after:]:
                    if line.startswith(prefix):
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or not self.cond.wait(left):
                    return None

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


def measure(agent, uri, pids, files):
    put(agent, "/tmp/click.wav", files["click"])
    put(agent, "/tmp/tone.wav", files["tone"])
    # Latency: CLICKS clicks, each triggered from the host.
    clicks = Client(uri, "clicks", str(CLICKS * 20 + 60))
    assert clicks.wait_for("connected"), "client did not connect"
    latencies = []
    for _ in range(CLICKS):
        seen = len(clicks.lines)
        t0 = time.clock_gettime(time.CLOCK_MONOTONIC)
        run_in_guest(agent, "aplay -q /tmp/click.wav")
        line = clicks.wait_for("click ", after=seen, timeout=20)
        if line:
            latencies.append(1000 * (float(line.split()[1]) - t0))
    clicks.stop()
    # CPU at idle, then while SECONDS of tone play to a listening client.
    c0, t0 = sum(cpu_seconds(p) for p in pids), time.monotonic()
    time.sleep(10)
    idle_rate = (sum(cpu_seconds(p) for p in pids) - c0) / (time.monotonic() - t0)
    raw = tempfile.mktemp(suffix=".raw")
    listener = Client(uri, "listen", raw, str(SECONDS + 60))
    assert listener.wait_for("connected"), "client did not connect"
    each0, t0 = [cpu_seconds(p) for p in pids], time.monotonic()
    out = run_in_guest(agent, "aplay /tmp/tone.wav 2>&1", timeout=SECONDS + 120)
    elapsed = time.monotonic() - t0
    each = [cpu_seconds(p) - c for p, c in zip(pids, each0)]
    cpu = sum(each)
    listener.wait_for("stop", timeout=10)
    listener.stop()
    pcm = np.fromfile(raw, dtype="<i2").reshape(-1, 2)[:, 0].astype(np.float64) / 32768
    os.unlink(raw)
    blocks = len(pcm) // 480
    rms = np.sqrt(np.mean(pcm[: blocks * 480].reshape(blocks, 480) ** 2, axis=1))
    loud = np.nonzero(rms > 0.01)[0]
    dropouts = int(np.sum(rms[loud[0]:loud[-1] + 1] < 0.01)) if len(loud) else -1
    return {"latency_ms": statistics.median(latencies) if latencies else float("nan"),
            "latency_all": latencies, "seconds": elapsed, "cpu_per_s": (cpu - idle_rate * elapsed) / SECONDS,
            "cpu_total_per_s": cpu / elapsed, "cpu_each_per_s": [c / elapsed for c in each], "underruns": out.count("underrun"), "dropouts": dropouts,
            "heard_s": len(pcm) / 48000}


def report(name, r):
    print(f"{name}: click latency median {r['latency_ms']:.0f} ms ({', '.join(f'{x:.0f}' for x in r['latency_all'])}); "
          f"{SECONDS:.0f} s tone took {r['seconds']:.1f} s, heard {r['heard_s']:.1f} s; CPU {r['cpu_per_s'] * 1000:.0f} ms "
          f"per audio second above idle ({r['cpu_total_per_s'] * 1000:.0f} ms/s in all: "
          f"{' + '.join(f'{c * 1000:.0f}' for c in r['cpu_each_per_s'])}); aplay underruns {r['underruns']}, "
          f"dropouts heard {r['dropouts']}", flush=True)


def main():
    work = tempfile.mkdtemp(prefix="audio-bench-")
    sox(f"{work}/click.wav", "synth", "0.02", "sine", "1000", "gain", "-1", "pad", "0", "0.3")
    sox(f"{work}/tone.wav", "synth", str(SECONDS), "sine", "1000", "gain", "-6")
    files = {k: open(f"{work}/{k}.wav", "rb").read() for k in ("click", "tone")}
    with ours_vm("--audio", "spice", "--no-display", "--no-inputs", label="audio") as (agent, uri, pids, query):
        ours = measure(agent, uri, pids, files)
        streams = query("audio")["streams"]
    report("hostvmm (vhost-user-snd + VirtioSound + SpiceBridge; CPU hostvmm + QEMU)", ours)
    print(f"  device counters: playback underruns {streams[0]['underruns']}, {streams[0]['buffers']} buffers")
    if not qemu_has_spice():
        return
    with reference_vm(["-audiodev", "spice,id=snd0", "-device", "virtio-sound-pci,audiodev=snd0"],
                      label="audio-qemu") as (agent, uri, pids):
        theirs = measure(agent, uri, pids, files)
    report("QEMU virtio-sound-pci + -audiodev spice", theirs)
    print(f"ratio ours/QEMU: latency {ours['latency_ms'] / theirs['latency_ms']:.2f}x, "
          f"CPU per audio second {ours['cpu_per_s'] / max(theirs['cpu_per_s'], 1e-9):.2f}x "
          f"(all CPU {ours['cpu_total_per_s'] / max(theirs['cpu_total_per_s'], 1e-9):.2f}x), "
          f"underruns {ours['underruns']} vs {theirs['underruns']}, dropouts {ours['dropouts']} vs {theirs['dropouts']}")


if __name__ == "__main__":
    main()
