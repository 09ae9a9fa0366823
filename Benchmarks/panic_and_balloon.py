#!/usr/bin/env python3
"""Panic and balloon figures for one 512 MiB TCG guest booted by hostvmm.

  - panic-to-event latency: the kernel's panic line (console timestamp, turned
    into wall-clock time through the guest's uptime and clock) to QEMU's
    GUEST_PANICKED timestamp as hostvmm relays it
  - time to write the crash bundle (console, registers, 512 MiB ELF vmcore)
  - balloon reclaim rate: MiB/s by which QEMU's RSS falls after inflating
    384 MiB of freshly freed guest memory, and the same for free-page
    reporting alone

Usage: Benchmarks/panic_and_balloon.py   (after `hostvmm image build`)
"""
import base64
import json
import re
import socket
import time

from bench_vm import BenchVM

NAME = "benchpanic"
vm = None


def cli(*args):
    return vm.cli(*args)


def guest_run(command):
    return vm.guest_run(command)


def qemu_rss_mib():
    pid = json.loads(cli("status", NAME))["pids"]["qemu"]
    with open(f"/proc/{pid}/status") as f:
        return int(next(l for l in f if l.startswith("VmRSS")).split()[1]) / 1024


def events():
    s = socket.socket(socket.AF_UNIX)
    s.connect(f"{vm.state}/{NAME}/control.sock")
    f = s.makefile("rb")
    f.readline()
    s.sendall(b'{"execute":"qmp_capabilities"}\n')
    f.readline()
    return s, f


def reclaim(after_freeing, baseline_wait=0.1, timeout=60):
    """Samples RSS until it stops falling; returns (MiB freed, seconds, MiB/s)."""
    start_rss, start = qemu_rss_mib(), time.monotonic()
    after_freeing()
    last, last_change = start_rss, time.monotonic()
    while time.monotonic() - start < timeout:
        time.sleep(baseline_wait)
        rss = qemu_rss_mib()
        if rss < last - 1:
            last, last_change = rss, time.monotonic()
        elif time.monotonic() - last_change > 3:
            break
    freed, seconds = start_rss - last, last_change - start
    return freed, seconds, freed / seconds if seconds > 0 else float("inf")


def main():
    global vm
    vm = BenchVM(NAME, "--memory", "512M")
    try:
        touch = "mkdir -p /mnt && mount -t tmpfs -o size=460m tmpfs /mnt; dd if=/dev/zero of=/mnt/x bs=1M count=400 2>/dev/null"
        guest_run(touch)
        freed, secs, rate = reclaim(lambda: (guest_run("rm /mnt/x"), cli("balloon", NAME, "128M")))
        print(f"balloon inflate to 128 MiB: QEMU RSS fell {freed:.0f} MiB in {secs:.1f} s ({rate:.0f} MiB/s)")
        cli("balloon", NAME, "512M")
        time.sleep(5)
        guest_run("dd if=/dev/zero of=/mnt/y bs=1M count=400 2>/dev/null")
        freed, secs, rate = reclaim(lambda: guest_run("rm /mnt/y"))
        print(f"free-page reporting alone:  QEMU RSS fell {freed:.0f} MiB in {secs:.1f} s ({rate:.0f} MiB/s)")

        # Wall-clock time of the guest's boot, to place console timestamps:
        # guest-get-time and /proc/uptime read back to back on one connection.
        sock, f = events()

        def control(command, request_id):
            sock.sendall(json.dumps({"execute": "agent-command", "arguments": {"command": command},
                                     "id": request_id}).encode() + b"\n")
            while True:
                msg = json.loads(f.readline())
                if msg.get("id") == request_id:
                    return msg["return"]["return"]

        handle = control({"execute": "guest-file-open", "arguments": {"path": "/proc/uptime"}}, 1)
        now_ns = control({"execute": "guest-get-time"}, 2)
        uptime_text = base64.b64decode(control({"execute": "guest-file-read", "arguments": {"handle": handle}}, 3)["buf-b64"])
        control({"execute": "guest-file-close", "arguments": {"handle": handle}}, 4)
        boot_epoch = now_ns / 1e9 - float(uptime_text.split()[0])
        vm.agent({"execute": "guest-exec", "arguments": {"path": "/bin/sh", "arg": ["-c", "echo c > /proc/sysrq-trigger"]}})
        panicked = captured = None
        while captured is None:
            msg = json.loads(f.readline())
            if msg.get("event") == "guest-panicked":
                ts = msg["timestamp"]
                panicked = ts["seconds"] + ts["microseconds"] / 1e6
            elif msg.get("event") == "crash-captured":
                captured = msg["data"]["bundle"]
        console = open(f"{captured}/console.txt").read()
        m = re.search(r"\[\s*([0-9.]+)\] Kernel panic", console)
        panic_epoch = boot_epoch + float(m.group(1))
        bundle = json.load(open(f"{captured}/event.json"))
        print(f"panic-to-event latency: {(panicked - panic_epoch) * 1000:.0f} ms "
              f"(guest clock vs host clock; TCG guest)")
        print(f"crash bundle for a 512 MiB guest: {bundle['capture-seconds']:.2f} s "
              f"(vmcore {bundle['vmcore'].get('bytes', 0) / 2**20:.0f} MiB, {bundle['vmcore']['format']})")
    finally:
        vm.close()


if __name__ == "__main__":
    main()
