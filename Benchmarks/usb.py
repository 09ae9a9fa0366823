#!/usr/bin/python3
"""A redirected USB disk's speed in the guest: hostvmm's stack (SPICE usbredir channel in
SpiceBridge -> hostvmm's stream guard -> QEMU usb-redir on qemu-xhci) against QEMU's own
SPICE (`-chardev spicevmc,name=usbredir` + usb-redir on qemu-xhci), same embedded guest,
same test device (Tests/HostVMMTests/Clients/usbredir_disk.py, high speed, over a real
SPICE link), in one run.

- Sequential read: `dd if=/dev/sda of=/dev/null bs=1M iflag=direct` of the whole 64 MiB
  image, timed in the guest (/proc/uptime); the median of ROUNDS (single runs on this
  2-core TCG host vary by +-20 %).
- Random 4 KiB reads: COUNT single-block `dd ... bs=4096 iflag=direct` at the same random
  offsets for both stacks, timed in the guest. Each read costs a busybox dd start too (the
  guest has no fio), the same on both sides, so the ratio understates the path's share.

Usage: Benchmarks/usb.py [ROUNDS] [COUNT] (default 7, 500). Needs a built hostvmm and
image, Debian's /usr/bin/python3 and qemu-system-modules-spice. Measure a release build
(HOSTVMM=.build/release/hostvmm).
"""
import os
import random
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_vm import ours_vm, qemu_has_spice, reference_vm, run_in_guest  # noqa: E402

DEVICE = f"{ROOT}/Tests/HostVMMTests/Clients/usbredir_disk.py"
ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 7
COUNT = int(sys.argv[2]) if len(sys.argv) > 2 else 500
BLOCKS = (64 << 20) // 4096


def wait_for_disk(agent):
    out = run_in_guest(agent, "for i in $(seq 1 300); do [ \"$(cat /sys/block/sda/size 2>/dev/null)\" = 131072 ] "
                              "&& echo ok && exit 0; sleep 0.1; done; echo missing")
    if out != "ok":
        raise SystemExit("the guest did not see the USB disk: " + run_in_guest(agent, "dmesg | tail -20"))


def measure(agent, uri, image, offsets):
    dev = subprocess.Popen(["/usr/bin/python3", DEVICE, "--image", image, "--spice", uri, "--channel", "0"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_disk(agent)
        seq = []
        for _ in range(ROUNDS):
            out = run_in_guest(agent, "a=$(cut -d' ' -f1 /proc/uptime); dd if=/dev/sda of=/dev/null bs=1M "
                                      "iflag=direct 2>/dev/null; b=$(cut -d' ' -f1 /proc/uptime); echo $a $b")
            a, b = (float(x) for x in out.split())
            seq.append(64 / (b - a))
        script = "a=$(cut -d' ' -f1 /proc/uptime); for o in " + " ".join(map(str, offsets)) + \
            "; do dd if=/dev/sda of=/dev/null bs=4096 count=1 skip=$o iflag=direct 2>/dev/null; done; " \
            "b=$(cut -d' ' -f1 /proc/uptime); echo $a $b"
        a, b = (float(x) for x in run_in_guest(agent, script, timeout=1800).split())
        return {"seq_mb_s": statistics.median(seq), "seq_all": seq, "iops": len(offsets) / (b - a)}
    finally:
        dev.terminate()
        dev.wait(timeout=30)


def main():
    work = tempfile.mkdtemp(prefix="usb-bench-")
    image = f"{work}/disk.img"
    with open(image, "wb") as f:
        f.write(os.urandom(64 << 20))
    rng = random.Random(13)
    offsets = [rng.randrange(BLOCKS) for _ in range(COUNT)]
    with ours_vm("--no-display", "--no-inputs", "--audio", "none", label="usb") as (agent, uri, pids, query):
        ours = measure(agent, uri, image, offsets)
    print(f"hostvmm (SpiceBridge usbredir + guard, usb-redir on qemu-xhci): sequential read "
          f"{ours['seq_mb_s']:.1f} MB/s median (rounds {', '.join(f'{x:.1f}' for x in ours['seq_all'])}), "
          f"4 KiB random reads {ours['iops']:.0f}/s", flush=True)
    if not qemu_has_spice():
        return
    with reference_vm(["-device", "qemu-xhci,id=xhci", "-chardev", "spicevmc,name=usbredir,id=ur0",
                       "-device", "usb-redir,chardev=ur0,id=ur0,bus=xhci.0"], label="usb-qemu") as (agent, uri, pids):
        theirs = measure(agent, uri, image, offsets)
    print(f"QEMU -spice + spicevmc usbredir (same device, same guest): sequential read {theirs['seq_mb_s']:.1f} MB/s median "
          f"(rounds {', '.join(f'{x:.1f}' for x in theirs['seq_all'])}), 4 KiB random reads {theirs['iops']:.0f}/s")
    print(f"ratio ours/QEMU: sequential read {ours['seq_mb_s'] / theirs['seq_mb_s']:.2f}x, "
          f"random 4 KiB reads {ours['iops'] / theirs['iops']:.2f}x")


if __name__ == "__main__":
    main()
