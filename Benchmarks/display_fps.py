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
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_vm import HOSTVMM  # noqa: E402
CLIENT = f"{ROOT}/Tests/HostVMMTests/Clients/spice_devices.py"
SECONDS = float(sys.argv[1]) if __name__ == "__main__" and len(sys.argv) > 1 else 20.0
TICK = os.sysconf("SC_CLK_TCK")

PREPARE = ("echo 0 > /sys/class/graphics/fbcon/cursor_blink; "
           "dd if=/dev/zero bs=3145728 count=1 2>/dev/null | tr '\\000' '\\100' > /tmp/a; "
           "dd if=/dev/zero bs=3145728 count=1 2>/dev/null | tr '\\000' '\\200' > /tmp/b; echo ok")
LOOP = ("i=0; end=$(( $(date +%s) + {secs} )); while [ $(date +%s) -lt $end ]; do "
        "dd if=/tmp/a of=/dev/fb0 bs=3145728 2>/dev/null; dd if=/tmp/b of=/dev/fb0 bs=3145728 2>/dev/null; "
        "i=$((i + 2)); done; echo $i")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def free_port(start):
    for port in range(start, start + 100):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise SystemExit("no free port")


class QGA:
    """A minimal qemu-guest-agent client on a unix socket (the reference VM)."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(path)
        self.buf = b""
        self.sock.settimeout(5)
        for attempt in range(60):
            n = 1000 + attempt
            self.sock.sendall(b"\xff" + json.dumps({"execute": "guest-sync-delimited", "arguments": {"id": n}}).encode())
            try:
                while True:
                    line = self.line()
                    if line and json.loads(line).get("return") == n:
                        self.sock.settimeout(None)
                        return
            except (socket.timeout, ValueError):
                continue
        raise SystemExit("reference guest agent did not answer")

    def line(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise SystemExit("agent socket closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.replace(b"\xff", b"").decode(errors="replace").strip()

    def request(self, req):
        self.sock.sendall(json.dumps(req).encode())
        return json.loads(self.line())


def run_in_guest(agent, command, wait=True, timeout=600):
    pid = agent({"execute": "guest-exec", "arguments": {"path": "/bin/sh", "arg": ["-c", command],
                                                         "capture-output": True}})["return"]["pid"]
    if not wait:
        return pid
    return wait_exec(agent, pid, timeout)


def wait_exec(agent, pid, timeout=600):
    import base64
    deadline = time.time() + timeout
    while time.time() < deadline:
        st = agent({"execute": "guest-exec-status", "arguments": {"pid": pid}})["return"]
        if st.get("exited"):
            return base64.b64decode(st.get("out-data", "")).decode().strip()
        time.sleep(0.2)
    raise SystemExit("guest command timed out")


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


@contextlib.contextmanager
def ours_vm():
    """Our VM with its display (the default), SPICE without a ticket on a free port.
    Yields (agent, uri, pids of hostvmm and QEMU, hostvmm's `display` as a function)."""
    state = tempfile.mkdtemp(prefix="display-ours-")
    os.chmod(state, 0o700)
    env = dict(os.environ, HOSTVMM_STATE_DIR=state)
    port = free_port(6300)
    name = "display"
    try:
        subprocess.run([HOSTVMM, "up", "--name", name, "--spice", f"127.0.0.1:{port}",
                        "--spice-insecure", "--detach"], env=env, check=True, capture_output=True)
        status = json.loads(subprocess.run([HOSTVMM, "status", name], env=env, capture_output=True,
                                           text=True).stdout)
        pids = [status["pids"]["hostvmm"], status["pids"]["qemu"]]

        def agent(req):
            out = subprocess.run([HOSTVMM, "agent", name, json.dumps(req)], env=env, capture_output=True, text=True)
            return json.loads(out.stdout)

        def display():
            return json.loads(subprocess.run([HOSTVMM, "display", name], env=env, capture_output=True,
                                             text=True).stdout)
        yield agent, f"spice://127.0.0.1?port={port}", pids, display
    finally:
        subprocess.run([HOSTVMM, "down", name], env=env, capture_output=True)
        shutil.rmtree(state, ignore_errors=True)


def image_paths():
    out = subprocess.run([HOSTVMM, "image", "build"], capture_output=True, text=True, check=True)
    paths = dict(l.split(": ", 1) for l in out.stdout.splitlines() if l.startswith(("kernel: ", "initrd: ")))
    return paths["kernel"], paths["initrd"]


def qemu_has_spice():
    # "-spice help" lists the options (and exits 1) only when the SPICE module is installed.
    probe = subprocess.run(["qemu-system-x86_64", "-spice", "help"], capture_output=True, text=True)
    if "addr=" in probe.stdout + probe.stderr:
        return True
    print("QEMU has no SPICE module: apt-get install -t bookworm-backports qemu-system-modules-spice "
          "for the reference run")
    return False


@contextlib.contextmanager
def reference_vm():
    """The same guest on QEMU's own virtio-gpu-pci and -spice, with a vdagent port (the
    embedded guest's agent serves it, as ours) so clients can send monitors configs.
    Yields (agent, uri, [QEMU's pid])."""
    kernel, initrd = image_paths()
    state = tempfile.mkdtemp(prefix="display-qemu-")
    port = free_port(6400)
    qga = f"{state}/qga.sock"
    args = ["qemu-system-x86_64", "-nodefaults", "-no-user-config", "-display", "none",
            "-machine", "q35,memory-backend=ram0", "-object", "memory-backend-memfd,id=ram0,size=512M,share=on",
            "-m", "512M", "-smp", "2", "-accel", "tcg", "-cpu", "max",
            "-kernel", kernel, "-initrd", initrd, "-append", "console=tty0 console=ttyS0 loglevel=4 panic=-1",
            "-serial", f"file:{state}/console.log",
            "-device", "virtio-serial-pci,id=vser0",
            "-chardev", f"socket,id=qga0,path={qga},server=on,wait=off",
            "-device", "virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0",
            "-chardev", "spicevmc,id=vdagent0,name=vdagent",
            "-device", "virtserialport,bus=vser0.0,chardev=vdagent0,name=com.redhat.spice.0",
            "-device", "virtio-gpu-pci,max_outputs=1",
            "-spice", f"port={port},addr=127.0.0.1,disable-ticketing=on"]
    qemu = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(100):
            if os.path.exists(qga):
                break
            time.sleep(0.1)
        conn = QGA(qga)
        yield conn.request, f"spice://127.0.0.1?port={port}", [qemu.pid]
    finally:
        qemu.kill()
        err = qemu.communicate()[1]
        if err.strip():
            print(f"reference qemu stderr: {err.strip()}", file=sys.stderr)
        shutil.rmtree(state, ignore_errors=True)


def main():
    with ours_vm() as (agent, uri, pids, display):
        a = measure(agent, uri, pids)
        errors = display().get("errors")
    print(f"hostvmm (vhost-user-gpu + SpiceBridge): {a['seen']} frames seen / {a['written']} written in "
          f"{a['seconds']:.1f} s = {a['fps']:.2f} fps; CPU (hostvmm+qemu) {a['cpu_s']:.1f} s = "
          f"{a['cpu_ms_per_frame']:.0f} ms/frame; device errors {errors}", flush=True)
    if not qemu_has_spice():
        return
    with reference_vm() as (agent, uri, pids):
        b = measure(agent, uri, pids)
    print(f"QEMU virtio-gpu-pci + -spice:           {b['seen']} frames seen / {b['written']} written in "
          f"{b['seconds']:.1f} s = {b['fps']:.2f} fps; CPU (qemu) {b['cpu_s']:.1f} s = "
          f"{b['cpu_ms_per_frame']:.0f} ms/frame", flush=True)
    print(f"ratio ours/QEMU: {a['fps'] / max(b['fps'], 1e-9):.2f}x fps, "
          f"{a['cpu_ms_per_frame'] / max(b['cpu_ms_per_frame'], 1e-9):.2f}x CPU per frame")


if __name__ == "__main__":
    main()
