#!/usr/bin/env python3
"""Clipboard transfer time between a SPICE client (spice-gtk) and the TCG guest.

For 1 MiB and 32 MiB of UTF-8 text:
  client -> guest: from starting the client's grab to the guest's headless
      clipboard holding every byte (polled with `guest-agent clipboard get | wc -c`
      through guest-exec, so the figure includes up to one poll of latency)
  guest -> client: from `guest-agent clipboard set` in the guest to spice-gtk
      delivering the data
Usage: Benchmarks/clipboard.py   (after `hostvmm image build`)
"""
import base64
import os
import subprocess
import tempfile
import time

from bench_vm import ROOT, BenchVM

CLIENT = f"{ROOT}/Tests/HostVMMTests/Clients/spice_session.py"


def text(size):
    line = "the quick brown fox ✓ jumps over the lazy dog\n".encode()
    return (line * (size // len(line) + 1))[:size]


def main():
    vm = BenchVM("benchclip")
    agent, guest = vm.agent, vm.guest_run
    uri = vm.cli("spice", vm.name).strip()
    try:
        for size in (1 << 20, 32 << 20):
            data = text(size)
            with tempfile.NamedTemporaryFile(delete=False) as f:
                f.write(data)
            t0 = time.monotonic()
            sender = subprocess.Popen(["/usr/bin/python3", CLIENT, uri, "send", f.name],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            while guest("/sbin/guest-agent clipboard get | wc -c") != str(size):
                pass
            c2g = time.monotonic() - t0
            sender.terminate()
            sender.wait()
            # guest -> client: put the same bytes in the guest (48 KiB per guest-file-write).
            h = agent({"execute": "guest-file-open", "arguments": {"path": "/tmp/clip", "mode": "w"}})["return"]
            for i in range(0, size, 48 << 10):
                agent({"execute": "guest-file-write", "arguments": {
                    "handle": h, "buf-b64": base64.b64encode(data[i:i + (48 << 10)]).decode()}})
            agent({"execute": "guest-file-close", "arguments": {"handle": h}})
            out = f.name + ".out"
            receiver = subprocess.Popen(["/usr/bin/python3", CLIENT, uri, "receive", out],
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            while receiver.stdout.readline().strip() != "ready":
                pass
            t0 = time.monotonic()
            agent({"execute": "guest-exec", "arguments": {"path": "/bin/sh", "arg": [
                "-c", "/sbin/guest-agent clipboard set < /tmp/clip"]}})
            while not receiver.stdout.readline().startswith("received"):
                pass
            g2c = time.monotonic() - t0
            receiver.wait()
            ok = open(out, "rb").read() == data
            os.unlink(out)
            os.unlink(f.name)
            print(f"{size >> 20:3d} MiB: client->guest {c2g:6.2f} s ({size / c2g / 2**20:5.1f} MiB/s), "
                  f"guest->client {g2c:6.2f} s ({size / g2c / 2**20:5.1f} MiB/s), bytes intact: {ok}")
    finally:
        vm.close()


if __name__ == "__main__":
    main()
