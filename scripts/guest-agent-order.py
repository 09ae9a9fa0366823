#!/usr/bin/env python3
"""Regenerates scripts/guest-agent.order: the functions guest-agent runs, for the linker
to place side by side (issue #17).

Why: the kernel maps a binary's code in 64 KiB blocks around each page fault
(fault-around), so the agent's resident memory follows how far apart the functions
it runs lie, not how much code runs (about 300 KiB). With those functions first in
.text (gold's --section-ordering-file; the agent's modules are built with
-function-sections), its peak RSS fell from 5.0 to 3.9 MiB. The Swift standard
library's own code is one 1.6 MiB section of libswiftCore.a and cannot be reordered.

How: runs the given (or the image's) static guest-agent under valgrind's callgrind
in unix-listen mode, as Benchmarks/agent_vs_qemu_ga.py does, sends every command a
default VM's host sends (ping, sync, info, time, networks, filesystems, users...),
and writes one `.text.SYMBOL` line per function that ran, sorted. Names that a later
change renames or removes are ignored by the linker, so a stale file costs memory,
never correctness; rerun this after large changes to the agent.

Usage: scripts/guest-agent-order.py [--agent PATH] [--out PATH]
Needs valgrind (apt-get install valgrind); `hostvmm image build` makes the agent.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "Benchmarks"))
from agent_vs_qemu_ga import Agent  # noqa: E402

COMMANDS = ("guest-ping", "guest-info", "guest-get-osinfo", "guest-get-time", "guest-get-host-name",
            "guest-network-get-interfaces", "guest-get-fsinfo", "guest-get-vcpus", "guest-get-users",
            "guest-get-timezone", "guest-get-memory-blocks", "guest-get-disks", "no-such-command")


def profile(agent, workdir):
    out = os.path.join(workdir, "callgrind.out")
    sock = os.path.join(workdir, "agent.sock")
    argv = ["valgrind", "--tool=callgrind", "--demangle=no", "--dump-instr=no", "--compress-strings=no",
            f"--callgrind-out-file={out}", agent, "-m", "unix-listen", "-p", sock, "-t", workdir]
    runner = Agent("guest-agent", argv, sock)
    runner.start()
    for command in COMMANDS:
        for _ in range(5):
            runner.client.call(command)
    runner.client.sync(7)
    runner.stop()  # SIGTERM: the agent exits normally, so callgrind writes its file
    names = set()
    with open(out) as f:
        for line in f:
            if line.startswith("fn="):
                names.add(line[3:].rstrip("\n").split("'")[0])  # 'N: callgrind's recursion depth
    return sorted(names)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agent", default=os.path.join(ROOT, ".build-guest/release/guest-agent"))
    parser.add_argument("--out", default=os.path.join(ROOT, "scripts/guest-agent.order"))
    args = parser.parse_args()
    if not shutil.which("valgrind"):
        sys.exit("guest-agent-order: valgrind is missing (apt-get install valgrind)")
    if not os.path.exists(args.agent):
        sys.exit(f"guest-agent-order: no agent at {args.agent} (run `hostvmm image build` first)")
    with tempfile.TemporaryDirectory(prefix="agent-order-") as workdir:
        names = profile(args.agent, workdir)
    with open(args.out, "w") as f:
        f.writelines(f".text.{name}\n" for name in names)
    print(f"guest-agent-order: {len(names)} functions -> {args.out}")


if __name__ == "__main__":
    main()
