#!/usr/bin/python3
"""A person's disk in the guest: hostvmm (`up --disk`, virtio-blk, cache=writeback)
against plain QEMU with the same disk file and the same -drive settings, same embedded
guest, one run. hostvmm is not on the data path (QEMU does the I/O); this checks that
nothing it adds (the command line, the claim, the overlay-free path) costs anything.

- Sequential read and write: 256 MiB with `dd bs=1M iflag=direct` / `oflag=direct`,
  timed in the guest (/proc/uptime), median of ROUNDS.
- 4 KiB random reads: COUNT single-block `dd iflag=direct` at the same offsets for both
  (busybox has no fio; each read also starts a dd, the same on both sides).

Usage: Benchmarks/disk.py [ROUNDS] [COUNT] (default 5, 500). Needs a built hostvmm and image.
"""
import os
import random
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_vm import ours_vm, reference_vm, run_in_guest  # noqa: E402

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 5
COUNT = int(sys.argv[2]) if len(sys.argv) > 2 else 500
SIZE_MIB = 256
TIMED = "a=$(cut -d' ' -f1 /proc/uptime); {} ; b=$(cut -d' ' -f1 /proc/uptime); echo $a $b"


def timed(agent, command):
    a, b = (float(x) for x in run_in_guest(agent, TIMED.format(command), timeout=1800).split())
    return b - a


def measure(agent, offsets):
    if "vda" not in run_in_guest(agent, "for i in $(seq 1 100); do [ -e /sys/block/vda ] && break; sleep 0.1; done; ls /sys/block"):
        raise SystemExit("the guest has no /dev/vda")
    reads = [SIZE_MIB / timed(agent, f"dd if=/dev/vda of=/dev/null bs=1M count={SIZE_MIB} iflag=direct 2>/dev/null")
             for _ in range(ROUNDS)]
    writes = [SIZE_MIB / timed(agent, f"dd if=/dev/zero of=/dev/vda bs=1M count={SIZE_MIB} oflag=direct 2>/dev/null")
              for _ in range(ROUNDS)]
    loop = "for o in " + " ".join(map(str, offsets)) + \
        "; do dd if=/dev/vda of=/dev/null bs=4096 count=1 skip=$o iflag=direct 2>/dev/null; done"
    return {"read": statistics.median(reads), "write": statistics.median(writes), "iops": len(offsets) / timed(agent, loop)}


def report(label, r):
    print(f"{label}: sequential read {r['read']:.0f} MB/s, write {r['write']:.0f} MB/s, 4 KiB random reads {r['iops']:.0f}/s",
          flush=True)


def main():
    work = tempfile.mkdtemp(prefix="disk-bench-")
    disk = f"{work}/disk.raw"
    with open(disk, "wb") as f:
        for _ in range(SIZE_MIB):
            f.write(os.urandom(1 << 20))
    rng = random.Random(14)
    offsets = [rng.randrange(SIZE_MIB * 256) for _ in range(COUNT)]
    with ours_vm("--disk", disk, "--image", "default", "--no-display", "--no-inputs", "--audio", "none",
                 label="disk") as (agent, _uri, _pids, _query):
        ours = measure(agent, offsets)
    report("hostvmm up --disk (virtio-blk, raw, cache=writeback)", ours)
    with reference_vm(["-drive", f"file={disk},if=none,id=d1,format=raw,cache=writeback,discard=unmap",
                       "-device", "virtio-blk-pci,drive=d1"], label="disk-qemu") as (agent, _uri, _pids):
        theirs = measure(agent, offsets)
    report("QEMU alone, same -drive", theirs)
    print(f"ratio ours/QEMU: read {ours['read'] / theirs['read']:.2f}x, write {ours['write'] / theirs['write']:.2f}x, "
          f"random 4 KiB reads {ours['iops'] / theirs['iops']:.2f}x")
    os.unlink(disk)


if __name__ == "__main__":
    main()
