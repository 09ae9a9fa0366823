#!/usr/bin/env python3
"""vmcore of a 1 GiB guest that has touched 200 MiB: hostvmm's copy from its guest RAM
memfd against QEMU's dump-guest-memory (ELF, paging=false), on the same paused guest.

The guest fills 200 MiB of its RAM with random data, notes where its kernel put
linux_banner (KASLR), and panics with --on-panic pause --vmcore none, so it stays
frozen; then `hostvmm vmcore` writes cores both ways, in alternating rounds. Reports
wall time and disk space (st_blocks) per method as medians with ours/QEMU ratios,
checks that gdb reads linux_banner from every core, and compares the guest RAM the
two kinds of core hold, byte for byte (QEMU's cores also hold the firmware ROMs,
which are not guest RAM; below 1 MiB the ROM shadows differ by design). QEMU's
kdump-zlib core of the same guest is timed too, for reference.

Usage: Benchmarks/vmcore.py [--rounds N]   (after `hostvmm image build`; needs gdb)
"""
import argparse
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time

from bench_vm import BenchVM

MIB = 1 << 20


def wait_paused(vm, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = json.loads(vm.cli("status", vm.name))
        if status.get("state") == "paused":
            return
        time.sleep(0.2)
    raise SystemExit(f"the guest did not pause after its panic within {timeout} s")


def banner_address(vm):
    out = vm.guest_run("grep -w -e linux_banner -e _text /proc/kallsyms; grep 'Kernel code' /proc/iomem; "
                       "cat /proc/version")
    text = banner = start = version = None
    for line in out.splitlines():
        words = line.split()
        if len(words) == 3 and words[2] == "_text":
            text = int(words[0], 16)
        elif len(words) == 3 and words[2] == "linux_banner":
            banner = int(words[0], 16)
        elif line.endswith(": Kernel code"):
            start = int(words[0].split("-")[0], 16)
        elif line.startswith("Linux version "):
            version = line
    if None in (text, banner, start, version):
        raise SystemExit(f"no kernel addresses in the guest: {out}")
    return start + banner - text, version


def loads(path):
    """PT_LOAD segments of an ELF core: (guest-physical address, file offset, size)."""
    with open(path, "rb") as f:
        head = f.read(1 << 20)
    phoff, = struct.unpack_from("<Q", head, 32)
    phentsize, phnum = struct.unpack_from("<HH", head, 54)
    out = []
    for i in range(phnum):
        p_type, _flags, offset, _vaddr, paddr, filesz = struct.unpack_from("<IIQQQQ", head, phoff + i * phentsize)
        if p_type == 1:
            out.append((paddr, offset, filesz))
    return out


def compare_ram(ours, theirs):
    """MiB compared and the guest-physical MiB whose bytes differ between the cores."""
    their_loads = loads(theirs)
    compared, differing = 0, []
    with open(ours, "rb") as a, open(theirs, "rb") as b:
        for paddr, offset, size in loads(ours):
            for chunk in range(0, size, MIB):
                phys = paddr + chunk
                seg = next((s for s in their_loads if s[0] <= phys and phys + MIB <= s[0] + s[2]), None)
                if seg is None:
                    continue
                a.seek(offset + chunk)
                b.seek(seg[1] + phys - seg[0])
                compared += 1
                if a.read(MIB) != b.read(MIB):
                    differing.append(phys // MIB)
    return compared, differing


def gdb_reads(core, address, version):
    out = subprocess.run(["gdb", "-batch", "-nx", "-c", core, "-ex", f"x/s {address:#x}"],
                         capture_output=True, text=True).stdout
    return version[:60] in out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if not shutil.which("gdb"):
        raise SystemExit("vmcore.py: gdb is missing (scripts/setup.sh installs it)")
    vm = BenchVM("benchcore", "--memory", "1G", "--on-panic", "pause", "--vmcore", "none")
    out = tempfile.mkdtemp(prefix="bench-vmcore-", dir=os.path.dirname(vm.state))
    try:
        vm.guest_run("dd if=/dev/urandom of=/tmp/fill bs=1M count=200 2>/dev/null; echo done")
        address, version = banner_address(vm)
        vm.agent({"execute": "guest-exec", "arguments": {"path": "/bin/sh", "arg": ["-c", "echo c > /proc/sysrq-trigger"]}})
        wait_paused(vm)
        results = {"guest-memory": [], "dump-guest-memory": [], "kdump-zlib": []}
        cores = {}
        for r in range(args.rounds):
            order = list(results) if r % 2 == 0 else list(reversed(results))
            for method in order:
                path = f"{out}/vmcore-{method}-{r}"
                subprocess.run(["sync"])
                t0 = time.monotonic()
                # kdump-zlib: QEMU's compressed format, for reference (gdb cannot read it).
                how = ["--format", "kdump-zlib"] if method == "kdump-zlib" else ["--method", method]
                info = json.loads(vm.cli("vmcore", vm.name, *how, "-o", path, "--json"))
                wall = time.monotonic() - t0
                st = os.stat(path)
                results[method].append((wall, st.st_blocks * 512, st.st_size, info))
                if method != "kdump-zlib" and not gdb_reads(path, address, version):
                    raise SystemExit(f"gdb did not read linux_banner from {path}")
                if r == 0 and method != "kdump-zlib":
                    cores[method] = path
                else:
                    os.unlink(path)
        compared, differing = compare_ram(cores["guest-memory"], cores["dump-guest-memory"])
    finally:
        vm.close()

    def med(method, i):
        return statistics.median(x[i] for x in results[method])

    ours, theirs = "guest-memory", "dump-guest-memory"
    print(f"1 GiB guest, 200 MiB filled, paused after a panic; {args.rounds} rounds each, medians")
    print(f"{'metric':28} {'hostvmm':>12} {'QEMU':>12} {'ratio':>7}")
    for label, i, scale in (("time (s)", 0, 1), ("disk used (MiB)", 1, MIB), ("file size (MiB)", 2, MIB)):
        a, b = med(ours, i) / scale, med(theirs, i) / scale
        print(f"{label:28} {a:12.2f} {b:12.2f} {a / b:7.2f}")
    k = [statistics.median(x[i] for x in results["kdump-zlib"]) for i in (0, 1)]
    print(f"QEMU kdump-zlib, for reference: {k[0]:.2f} s, {k[1] / MIB:.1f} MiB on disk")
    print(f"gdb reads linux_banner from every ELF core: yes ({version[:40]}...)")
    print(f"guest RAM compared: {compared} MiB; differing MiB: {differing or 'none'}")
    shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
