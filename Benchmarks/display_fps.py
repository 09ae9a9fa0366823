#!/usr/bin/python3
"""Full-frame display updates per second seen by a SPICE client, and host CPU
time per frame: hostvmm's stack (vhost-user-gpu-pci -> our VirtioGPU backend ->
SpiceBridge's simple display) against QEMU's own virtio-gpu-pci + -spice
(package qemu-system-modules-spice), same embedded guest, same workload.

Workload (in the guest, through the guest agent): two 1024x768 frames
(every byte 0x40, then 0x80) written alternately to /dev/fb0, one write() of
3 MiB each, so each is one full-frame damage rectangle. The client is
spice-gtk (Tests/HostVMMTests/Clients/spice_devices.py "watch"): it counts a
frame each time pixel (0,0) changes. CPU: utime+stime of hostvmm and QEMU
(ours) or QEMU (reference) over the measured window, divided by the frames
the client saw.

Usage: Benchmarks/display_fps.py [SECONDS] (default 20). Needs a built hostvmm
(HOSTVMM=path, else the newer of .build/release and .build/debug), a built embedded image (hostvmm image build), spicy's
python3-gi, and qemu-system-modules-spice for the reference. Boots one guest at a time.
Under TCG both sides are limited by the emulated guest writing 3 MiB per frame.
"""
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_vm import cpu_seconds, ours_vm, qemu_has_spice, reference_vm, run_in_guest  # noqa: E402
CLIENT = f"{ROOT}/Tests/HostVMMTests/Clients/spice_devices.py"
SECONDS = float(sys.argv[1]) if __name__ == "__main__" and len(sys.argv) > 1 else 20.0

PREPARE = ("echo 0 > /sys/class/graphics/fbcon/cursor_blink; "
           "dd if=/dev/zero bs=3145728 count=1 2>/dev/null | tr '\\000' '\\100' > /tmp/a; "
           "dd if=/dev/zero bs=3145728 count=1 2>/dev/null | tr '\\000' '\\200' > /tmp/b; echo ok")
LOOP = ("i=0; end=$(( $(date +%s) + {secs} )); while [ $(date +%s) -lt $end ]; do "
        "dd if=/tmp/a of=/dev/fb0 bs=3145728 2>/dev/null; dd if=/tmp/b of=/dev/fb0 bs=3145728 2>/dev/null; "
        "i=$((i + 2)); done; echo $i")


# The reference: QEMU's own virtio-gpu, with the console on it as ours.
REFERENCE_DEVICES = ["-device", "virtio-gpu-pci,max_outputs=1"]
REFERENCE_APPEND = "console=tty0 console=ttyS0 loglevel=4 panic=-1"


def measure(agent, uri, pids):
    assert run_in_guest(agent, PREPARE) == "ok"
    time.sleep(2)
    # The client first, then the loop; the client watches SECONDS + 2.
    client = subprocess.Popen(["/usr/bin/python3", CLIENT, uri, "watch", str(SECONDS + 2)],
                              stdout=subprocess.PIPE, text=True)
    time.sleep(2)  # connected, primary surface received
    cpu0 = sum(cpu_seconds(p) for p in pids)
    t0 = time.monotonic()
    written = int(run_in_guest(agent, LOOP.format(secs=int(SECONDS)), timeout=SECONDS + 120))
    elapsed = time.monotonic() - t0
    cpu = sum(cpu_seconds(p) for p in pids) - cpu0
    out = client.communicate(timeout=SECONDS + 60)[0]
    stamps = [float(l.split()[2]) for l in out.splitlines() if l.startswith("frame ")]
    # Frames inside the guest loop's window only (both clocks are CLOCK_MONOTONIC).
    seen = sum(1 for s in stamps if t0 <= s <= t0 + elapsed)
    return {"written": written, "seen": seen, "seconds": elapsed, "fps": seen / elapsed,
            "cpu_s": cpu, "cpu_ms_per_frame": 1000 * cpu / max(seen, 1)}


def main():
    with ours_vm(label="display") as (agent, uri, pids, query):
        a = measure(agent, uri, pids)
        errors = query("display").get("errors")
    print(f"hostvmm (vhost-user-gpu + SpiceBridge): {a['seen']} frames seen / {a['written']} written in "
          f"{a['seconds']:.1f} s = {a['fps']:.2f} fps; CPU (hostvmm+qemu) {a['cpu_s']:.1f} s = "
          f"{a['cpu_ms_per_frame']:.0f} ms/frame; device errors {errors}", flush=True)
    if not qemu_has_spice():
        return
    with reference_vm(REFERENCE_DEVICES, label="display-qemu", append=REFERENCE_APPEND) as (agent, uri, pids):
        b = measure(agent, uri, pids)
    print(f"QEMU virtio-gpu-pci + -spice:           {b['seen']} frames seen / {b['written']} written in "
          f"{b['seconds']:.1f} s = {b['fps']:.2f} fps; CPU (qemu) {b['cpu_s']:.1f} s = "
          f"{b['cpu_ms_per_frame']:.0f} ms/frame", flush=True)
    print(f"ratio ours/QEMU: {a['fps'] / max(b['fps'], 1e-9):.2f}x fps, "
          f"{a['cpu_ms_per_frame'] / max(b['cpu_ms_per_frame'], 1e-9):.2f}x CPU per frame")


if __name__ == "__main__":
    main()
