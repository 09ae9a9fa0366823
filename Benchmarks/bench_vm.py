"""A guest booted by hostvmm for the benchmarks, with the agent calls they share."""
import base64
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# HOSTVMM=path, else the newer of the release and debug builds: a stale release build lacks
# what the benchmark uses.
HOSTVMM = os.environ.get("HOSTVMM") or max((p for p in (f"{ROOT}/.build/release/hostvmm", f"{ROOT}/.build/debug/hostvmm") if os.access(p, os.X_OK)),
              key=os.path.getmtime)


class BenchVM:
    """`hostvmm up --detach` in a private state directory; `down` in `close`."""

    def __init__(self, name, *up_options):
        self.name = name
        self.state = tempfile.mkdtemp(prefix=f"bench-{name}-")
        self.env = dict(os.environ, HOSTVMM_STATE_DIR=self.state)
        subprocess.run([HOSTVMM, "up", "--detach", "--name", name, *up_options], env=self.env, check=True,
                       stdout=subprocess.DEVNULL)

    def cli(self, *args):
        return subprocess.run([HOSTVMM, *args], env=self.env, capture_output=True, text=True, check=True).stdout

    def agent(self, request):
        return json.loads(self.cli("agent", self.name, json.dumps(request)))

    def guest_run(self, command, timeout=600):
        """Runs a shell command in the guest; returns its output once it exits (at most `timeout` s)."""
        pid = self.agent({"execute": "guest-exec", "arguments": {"path": "/bin/sh", "arg": ["-c", command],
                                                                  "capture-output": True}})["return"]["pid"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.agent({"execute": "guest-exec-status", "arguments": {"pid": pid}})["return"]
            if st["exited"]:
                return base64.b64decode(st.get("out-data", "")).decode().strip()
            time.sleep(0.05)
        raise SystemExit(f"guest command did not finish within {timeout} s: {command}")

    def close(self):
        subprocess.run([HOSTVMM, "down", self.name], env=self.env, stdout=subprocess.DEVNULL)


# Shared by the benchmarks that compare a hostvmm VM with QEMU alone (display, audio).
TICK = os.sysconf("SC_CLK_TCK")


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


class ControlSocket:
    """hostvmm's control socket (QMP-style JSON lines, protocol.md §2), events skipped."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(path)
        self.file = self.sock.makefile("rwb")
        json.loads(self.file.readline())  # greeting
        self.execute("qmp_capabilities")

    def execute(self, command, arguments=None):
        self.file.write(json.dumps({"execute": command, "arguments": arguments or {}}).encode() + b"\n")
        self.file.flush()
        while True:
            reply = json.loads(self.file.readline())
            if "event" in reply:
                continue
            if "error" in reply:
                raise SystemExit(f"{command}: {reply['error']}")
            return reply["return"]


@contextlib.contextmanager
def ours_vm(*options, label="ours"):
    """Our VM (`hostvmm up` with `options`), SPICE without a ticket on a free port. Yields
    (agent, uri, pids of hostvmm and QEMU, a function running `hostvmm CMD NAME` -> its JSON)."""
    state = tempfile.mkdtemp(prefix=f"{label}-")
    os.chmod(state, 0o700)
    env = dict(os.environ, HOSTVMM_STATE_DIR=state)
    port = free_port(6300)
    name = label
    try:
        subprocess.run([HOSTVMM, "up", "--name", name, "--spice", f"127.0.0.1:{port}",
                        "--spice-insecure", "--detach", *options], env=env, check=True, capture_output=True)
        status = json.loads(subprocess.run([HOSTVMM, "status", name], env=env, capture_output=True,
                                           text=True).stdout)
        pids = [status["pids"]["hostvmm"], status["pids"]["qemu"]]

        # The agent through one open control-socket connection (agent-command), not a
        # `hostvmm agent` process per call: timings then compare the channels, not process starts.
        control = ControlSocket(f"{state}/{name}/control.sock")

        def agent(req):
            return control.execute("agent-command", {"command": req})

        def query(command):
            return json.loads(subprocess.run([HOSTVMM, command, name], env=env, capture_output=True,
                                             text=True).stdout)
        yield agent, f"spice://127.0.0.1?port={port}", pids, query
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
def reference_vm(devices, append="console=ttyS0 loglevel=4 panic=-1", label="qemu"):
    """The same embedded guest on QEMU alone with its own `devices` (arguments) and -spice,
    with a vdagent port (the guest's agent serves it, as ours). Yields (agent, uri, [QEMU's pid])."""
    kernel, initrd = image_paths()
    state = tempfile.mkdtemp(prefix=f"{label}-")
    port = free_port(6400)
    qga = f"{state}/qga.sock"
    args = ["qemu-system-x86_64", "-nodefaults", "-no-user-config", "-display", "none",
            "-machine", "q35,memory-backend=ram0", "-object", "memory-backend-memfd,id=ram0,size=512M,share=on",
            "-m", "512M", "-smp", "2", "-accel", "tcg", "-cpu", "max",
            "-kernel", kernel, "-initrd", initrd, "-append", append,
            "-serial", f"file:{state}/console.log",
            "-device", "virtio-serial-pci,id=vser0",
            "-chardev", f"socket,id=qga0,path={qga},server=on,wait=off",
            "-device", "virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0",
            "-chardev", "spicevmc,id=vdagent0,name=vdagent",
            "-device", "virtserialport,bus=vser0.0,chardev=vdagent0,name=com.redhat.spice.0",
            *devices,
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
