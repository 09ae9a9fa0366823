#!/usr/bin/env python3
"""Launch to a ready agent: `hostvmm up` against plain QEMU booting the same kernel with qemu-ga.

  - hostvmm: `hostvmm up` of the default image (our static agent), timed from the
    command to its "agent-ready" event (the agent answered guest-sync through the whole
    chain), once with the default devices (display, inputs, sound, USB, SPICE) and once
    with `--no-display --no-inputs --audio none --no-usb --no-spice`;
  - QEMU alone: the same kernel and init with Debian's qemu-ga in place of our agent
    (`hostvmm image build --agent /usr/sbin/qemu-ga`), q35/TCG with a virtio-serial port
    and nothing else, timed from exec to the first guest-sync-delimited qemu-ga answers.
With --compression, also the default image's initramfs compressed (zstd -3, gzip -9,
xz) against uncompressed, booted by hostvmm: what decompression costs under TCG, and the
guest RAM (memfd blocks) left allocated after boot.

Rounds alternate the variants; medians of N rounds. Usage:
  Benchmarks/boot.py [-n ROUNDS] [--compression]   (root; after `hostvmm image build`)
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import tempfile
import time

from bench_vm import HOSTVMM

MEMORY = "1G"


def image(agent=None):
    """(kernel, initrd) of the default image, or of one built around another agent binary."""
    args = [HOSTVMM, "image", "build"] + (["--agent", agent] if agent else [])
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    paths = dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)
    return paths["kernel"].strip(), paths["initrd"].strip()


def hostvmm_boot(*options):
    """Seconds from `hostvmm up` to its agent-ready event, and the guest RAM then allocated (MiB)."""
    state = tempfile.mkdtemp(prefix="bench-boot-")
    env = dict(os.environ, HOSTVMM_STATE_DIR=state)
    t0 = time.monotonic()
    up = subprocess.Popen([HOSTVMM, "up", "--name", "bootbench", "--memory", MEMORY, *options], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in up.stdout:
            if '"agent-ready"' in line:
                seconds = time.monotonic() - t0
                break
        else:
            raise SystemExit("hostvmm up ended before the agent was ready")
        time.sleep(3)  # let the guest settle before reading what it left allocated
        qemu = json.loads(subprocess.run([HOSTVMM, "status", "bootbench"], env=env, capture_output=True,
                                         text=True).stdout).get("pids", {}).get("qemu")
        allocated = os.stat(f"/proc/{qemu}/fd/3").st_blocks * 512 / (1 << 20) if qemu else float("nan")
        return seconds, allocated
    finally:
        subprocess.run([HOSTVMM, "down", "bootbench"], env=env, capture_output=True)
        up.wait(timeout=60)


def qemu_boot(kernel, initrd):
    """Seconds from exec of plain QEMU to qemu-ga's first answer to guest-sync-delimited."""
    work = tempfile.mkdtemp(prefix="bench-boot-qemu-")
    sock = f"{work}/qga.sock"
    t0 = time.monotonic()
    qemu = subprocess.Popen([
        "qemu-system-x86_64", "-nodefaults", "-no-user-config", "-display", "none",
        "-machine", "q35", "-accel", "tcg", "-cpu", "max", "-m", MEMORY, "-smp", "2",
        "-kernel", kernel, "-initrd", initrd, "-append", "console=ttyS0 loglevel=4 panic=-1",
        "-serial", f"file:{work}/console.log",
        "-device", "virtio-serial-pci",
        "-chardev", f"socket,id=qga,path={sock},server=on,wait=off",
        "-device", "virtserialport,chardev=qga,name=org.qemu.guest_agent.0",
    ], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = t0 + 120
        while not os.path.exists(sock):
            if time.monotonic() > deadline:
                raise SystemExit("QEMU made no agent socket")
            time.sleep(0.01)
        s = socket.socket(socket.AF_UNIX)
        s.connect(sock)
        s.settimeout(0.2)
        buf = b""
        while time.monotonic() < deadline:
            # Until the guest's port opens QEMU drops what we send, so ask again and again.
            s.sendall(b"\xff" + json.dumps({"execute": "guest-sync-delimited", "arguments": {"id": 77}}).encode() + b"\n")
            try:
                buf += s.recv(65536)
            except socket.timeout:
                continue
            if b'"return": 77' in buf or b'"return":77' in buf:
                return time.monotonic() - t0
        raise SystemExit("qemu-ga never answered")
    finally:
        qemu.kill()
        qemu.wait()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=3)
    parser.add_argument("--compression", action="store_true")
    args = parser.parse_args()
    kernel, initrd = image()
    _, qga_initrd = image("/usr/sbin/qemu-ga")
    minimal = ("--no-display", "--no-inputs", "--audio", "none", "--no-usb", "--no-spice")
    samples = {"hostvmm up (default devices)": [], "hostvmm up (minimal devices)": [], "QEMU + qemu-ga": []}
    for _ in range(args.n):
        samples["hostvmm up (default devices)"].append(hostvmm_boot()[0])
        samples["hostvmm up (minimal devices)"].append(hostvmm_boot(*minimal)[0])
        samples["QEMU + qemu-ga"].append(qemu_boot(kernel, qga_initrd))
    reference = statistics.median(samples["QEMU + qemu-ga"])
    print(f"launch -> agent answers, {MEMORY} TCG guest, median of {args.n}")
    print(f"{'':32} {'seconds':>8} {'ratio':>7}")
    for name, xs in samples.items():
        print(f"{name:32} {statistics.median(xs):8.2f} {statistics.median(xs) / reference:7.2f}")
    print(f"initramfs: ours {os.path.getsize(initrd) / (1 << 20):.1f} MiB, "
          f"with qemu-ga {os.path.getsize(qga_initrd) / (1 << 20):.1f} MiB")

    if args.compression:
        work = tempfile.mkdtemp(prefix="bench-initrd-")
        variants = {"none": initrd}
        for name, cmd in (("zstd -3", ["zstd", "-3", "-q", "-c"]), ("gzip -9", ["gzip", "-9", "-c"]),
                          ("xz", ["xz", "--check=crc32", "-9", "-c"])):
            path = f"{work}/initrd.{name.split()[0]}"
            t0 = time.monotonic()
            with open(path, "wb") as out:
                subprocess.run(cmd + [initrd], stdout=out, check=True)
            variants[name] = path
            print(f"compressed with {name}: {os.path.getsize(path) / (1 << 20):.1f} MiB in {time.monotonic() - t0:.1f} s")
        results = {name: [] for name in variants}
        for _ in range(args.n):
            for name, path in variants.items():
                results[name].append(hostvmm_boot("--kernel", kernel, "--initrd", path, *minimal))
        base = statistics.median(x[0] for x in results["none"])
        print(f"{'initramfs':12} {'ready (s)':>9} {'ratio':>7} {'guest RAM allocated (MiB)':>26}")
        for name, xs in results.items():
            t = statistics.median(x[0] for x in xs)
            print(f"{name:12} {t:9.2f} {t / base:7.2f} {statistics.median(x[1] for x in xs):26.0f}")


if __name__ == "__main__":
    main()
