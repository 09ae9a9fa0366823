#!/usr/bin/python3
"""Guest <-> host TCP throughput for the network modes a VM can have without host
set-up: QEMU's user-mode stack (slirp; hostvmm's default, --net user) against passt
(`-netdev stream` to a passt process), same embedded guest, same QEMU, one run.

The guest sends COUNT x 64 KiB of zeros to a Python receiver on the host's loopback
(busybox `nc`, to 10.0.2.2 with user mode, to the gateway passt maps to the host's
loopback), then receives the same amount (`nc ... > /dev/null`). Timed on the host from
the first to the last byte.

A direction that stalls is reported with what it moved (Debian bookworm's passt,
0.0~git20230309, stalls on host->guest bulk transfers here; see docs/disks.md).

Usage: Benchmarks/network.py [MIB] (default 48). Needs a built hostvmm image and the
passt package (the passt half is skipped, and said so, without it).
"""
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_vm import reference_vm, run_in_guest  # noqa: E402

MIB = int(sys.argv[1]) if len(sys.argv) > 1 else 48
LIMIT = 120  # seconds per direction; user mode needs ~10 s for 48 MiB guest->host


def serve(kind):
    """A one-connection server on 127.0.0.1: 'sink' counts what arrives, 'source' sends MIB."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    result = {}

    def run():
        conn, _ = server.accept()
        start = None
        total = 0
        if kind == "sink":
            while True:
                data = conn.recv(1 << 20)
                if not data:
                    break
                start = start or time.monotonic()
                total += len(data)
        else:
            block = bytes(1 << 16)
            start = time.monotonic()
            try:
                for _ in range(MIB * 16):
                    conn.sendall(block)
                    total += len(block)
                conn.shutdown(socket.SHUT_WR)
            except OSError:  # the guest's nc gave up (its timeout): a stall, counted below
                result["bytes"] = total
                conn.close()
                return
            while conn.recv(1 << 16):
                pass
        result["seconds"] = time.monotonic() - start
        result["bytes"] = total
        conn.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return server.getsockname()[1], thread, result


def measure(agent, host_ip):
    out = run_in_guest(agent, "for i in $(seq 1 100); do ip -4 addr show eth0 | grep -q inet && break; sleep 0.1; done; "
                              "ip -4 addr show eth0 | grep inet")
    if "inet" not in out:
        raise SystemExit("the guest has no address")
    port, thread, sent = serve("sink")
    run_in_guest(agent, f"dd if=/dev/zero bs=64k count={MIB * 16} 2>/dev/null | timeout {LIMIT} nc {host_ip} {port}",
                 timeout=LIMIT + 60)
    thread.join(60)
    port, thread, received = serve("source")
    run_in_guest(agent, f"timeout {LIMIT} nc {host_ip} {port} > /dev/null", timeout=LIMIT + 60)
    thread.join(60)
    return rate(sent), rate(received)


def rate(result):
    """MB/s, or a string saying how much moved before the direction stalled."""
    if "seconds" not in result or result.get("bytes", 0) < MIB << 20:
        return f"stalled after {result.get('bytes', 0) / 1e6:.1f} of {(MIB << 20) / 1e6:.0f} MB in {LIMIT} s"
    return result["bytes"] / result["seconds"] / 1e6


def show(value):
    return f"{value:.0f} MB/s" if isinstance(value, float) else value


def ratio(ours, theirs):
    return f"{ours / theirs:.2f}x" if isinstance(ours, float) and isinstance(theirs, float) else "n/a"


def main():
    with reference_vm(["-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0"], label="net-user") as (agent, _u, _p):
        user = measure(agent, "10.0.2.2")
    print(f"user mode (slirp): guest->host {show(user[0])}, host->guest {show(user[1])}", flush=True)
    passt = shutil.which("passt")
    if not passt:
        print("passt is not installed (apt-get install passt): no comparison")
        return
    sock = f"/tmp/passt-bench-{os.getpid()}.sock"
    proc = subprocess.Popen([passt, "--foreground", "--socket", sock], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(100):
            if os.path.exists(sock):
                break
            time.sleep(0.05)
        gateway = subprocess.run(["ip", "-4", "route", "show", "default"], capture_output=True, text=True).stdout.split()
        host_ip = gateway[2] if len(gateway) > 2 else "10.0.2.2"
        with reference_vm(["-netdev", f"stream,id=n0,server=off,addr.type=unix,addr.path={sock}",
                           "-device", "virtio-net-pci,netdev=n0"], label="net-passt") as (agent, _u, _p):
            theirs = measure(agent, host_ip)
        print(f"passt: guest->host {show(theirs[0])}, host->guest {show(theirs[1])}")
        print(f"ratio user/passt: guest->host {ratio(user[0], theirs[0])}, host->guest {ratio(user[1], theirs[1])}")
    finally:
        proc.kill()
        proc.wait()
        if os.path.exists(sock):
            os.unlink(sock)


if __name__ == "__main__":
    main()
