#!/usr/bin/python3
"""A person's disk in the guest: hostvmm (`up --disk`, virtio-blk, cache=writeback)
against plain QEMU with the same disk file and the same -drive settings, same embedded
guest, one run. hostvmm is not on the data path (QEMU does the I/O); this checks that
nothing it adds (the command line, the claim, the overlay-free path) costs anything.

- Sequential read and write: the 256 MiB disk PASSES times over in one timed command
  (`dd bs=1M iflag=direct` / `oflag=direct`; ~1 s, so /proc/uptime's 10 ms tick is ~1 %),
  timed in the guest, median of ROUNDS.
- Both VMs run at once, each on its own copy of the disk (QEMU's image locking allows one
  writer), and the rounds alternate between them, so a slow minute of the host hits both.
- 4 KiB random reads: COUNT single-block `dd iflag=direct` at the same offsets for both
  (busybox has no fio; each read also starts a dd, the same on both sides).

Usage: Benchmarks/disk.py [ROUNDS] [COUNT] (default 9, 300). Needs a built hostvmm and image.
"""
import os
import random
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_vm import ours_vm, reference_vm, run_in_guest  # noqa: E402

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 9
COUNT = int(sys.argv[2]) if len(sys.argv) > 2 else 300
SIZE_MIB = 256
PASSES = 4
# The reference VM has only the disk; hostvmm's default VM also has USB controllers, a NIC
# and virtio-rng, whose timers cost a TCG guest CPU in the process-per-read random test.
# HOSTVMM_DISK_BENCH_DEFAULTS=1 keeps them, to see that cost.
EXTRA = [] if os.environ.get("HOSTVMM_DISK_BENCH_DEFAULTS") else ["--no-usb", "--net", "none", "--no-rng"]
TIMED = "a=$(cut -d' ' -f1 /proc/uptime); {} ; b=$(cut -d' ' -f1 /proc/uptime); echo $a $b"


def timed(agent, command):
    a, b = (float(x) for x in run_in_guest(agent, TIMED.format(command), timeout=1800).split())
    return b - a


def wait_for_disk(agent):
    if "vda" not in run_in_guest(agent, "for i in $(seq 1 100); do [ -e /sys/block/vda ] && break; sleep 0.1; done; ls /sys/block"):
        raise SystemExit("the guest has no /dev/vda")


def one_round(agent, offsets):
    loop = f"for p in $(seq 1 {PASSES}); do dd if=/dev/vda of=/dev/null bs=1M count={SIZE_MIB} iflag=direct 2>/dev/null; done"
    read = PASSES * SIZE_MIB / timed(agent, loop)
    loop = f"for p in $(seq 1 {PASSES}); do dd if=/dev/zero of=/dev/vda bs=1M count={SIZE_MIB} oflag=direct 2>/dev/null; done"
    write = PASSES * SIZE_MIB / timed(agent, loop)
    loop = "for o in " + " ".join(map(str, offsets)) + \
        "; do dd if=/dev/vda of=/dev/null bs=4096 count=1 skip=$o iflag=direct 2>/dev/null; done"
    return {"read": read, "write": write, "iops": len(offsets) / timed(agent, loop)}


def medians(rounds):
    return {key: statistics.median(r[key] for r in rounds) for key in ("read", "write", "iops")}


def report(label, r):
    print(f"{label}: sequential read {r['read']:.0f} MB/s, write {r['write']:.0f} MB/s, 4 KiB random reads {r['iops']:.0f}/s",
          flush=True)


def main():
    work = tempfile.mkdtemp(prefix="disk-bench-")
    disks = [f"{work}/ours.raw", f"{work}/qemu.raw"]
    with open(disks[0], "wb") as f:
        for _ in range(SIZE_MIB):
            f.write(os.urandom(1 << 20))
    with open(disks[0], "rb") as f, open(disks[1], "wb") as g:
        g.write(f.read())
    rng = random.Random(14)
    offsets = [rng.randrange(SIZE_MIB * 256) for _ in range(COUNT)]
    with ours_vm("--disk", disks[0], "--image", "default", "--no-display", "--no-inputs", "--audio", "none", *EXTRA,
                 label="disk") as (ours_agent, _uri, _pids, _query), \
         reference_vm(["-drive", f"file={disks[1]},if=none,id=d1,format=raw,cache=writeback,discard=unmap",
                       "-device", "virtio-blk-pci,drive=d1"], label="disk-qemu") as (qemu_agent, _u, _p):
        wait_for_disk(ours_agent)
        wait_for_disk(qemu_agent)
        ours_rounds, qemu_rounds = [], []
        for i in range(ROUNDS):
            # Alternate which goes first, so neither always runs right after the other's writes.
            pair = [(ours_rounds, ours_agent), (qemu_rounds, qemu_agent)]
            for rounds, agent in (pair if i % 2 == 0 else pair[::-1]):
                rounds.append(one_round(agent, offsets))
        ours, theirs = medians(ours_rounds), medians(qemu_rounds)
    report("hostvmm up --disk (virtio-blk, raw, cache=writeback)", ours)
    report("QEMU alone, same -drive", theirs)
    print(f"ratio ours/QEMU: read {ours['read'] / theirs['read']:.2f}x, write {ours['write'] / theirs['write']:.2f}x, "
          f"random 4 KiB reads {ours['iops'] / theirs['iops']:.2f}x")
    for d in disks:
        os.unlink(d)
    os.rmdir(work)


if __name__ == "__main__":
    main()
