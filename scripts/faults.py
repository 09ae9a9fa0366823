#!/usr/bin/python3
"""Fault injection against a running hostvmm VM (issue #16), with counts.

Boots its own VM (the embedded image, display and SPICE on), injects each
fault, and after each one checks that the VM and hostvmm still serve: a
fresh control request is answered, the next agent command answers its own
request, and a clipboard transfer guest -> SPICE client arrives intact.
Prints one table; exits 1 if any reply was lost or misdelivered, any check
failed, or hostvmm died where it should not have.

  sudo scripts/faults.py [--hostvmm PATH] [--agent-kills 100] [--control-cycles 1000]
                         [--garbage-clients 100] [--spice-cycles 1000] [--only NAME ...]

Faults (in this order; NAME for --only):
  control-churn   connect/disconnect cycles on the control socket, cut at every stage
  control-garbage clients at once, each sending random bytes and a 2 MiB line (those past
                  the 64-session bound get the refusal and count as refused, not acknowledged)
  spice-churn     SPICE sessions linked (main + display channel) and dropped; RSS before/after
  agent-kill      the guest agent killed with SIGKILL (init respawns it); every
                  request after it must get its own reply
  full-disk       a guest panic while the crash directory is a full 16 MiB tmpfs
  qemu-kill       QEMU killed with SIGKILL: hostvmm must report it and exit, leaving
                  no process and no socket behind (last: it ends the VM)

Run as root (full-disk mounts a tmpfs). Debian's /usr/bin/python3 (gi for the
clipboard client). Figures from a run: docs/hardening.md.
"""
import argparse
import base64
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLIENTS = os.path.join(ROOT, "Tests", "HostVMMTests", "Clients")
sys.path.insert(0, CLIENTS)
import spice_link  # noqa: E402

NAME = "faults"
DISPLAY_CHANNEL = 2


class Failure(Exception):
    pass


def log(text):
    print(f"faults: {text}", flush=True)


def run(hostvmm, *args, timeout=600):
    return subprocess.run([hostvmm, *args], capture_output=True, text=True, timeout=timeout)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise Failure(f"no VmRSS for {pid}")


def settled_rss(pid, deadline=30):
    """VmRSS once two samples half a second apart agree (or after `deadline`)."""
    last = rss_kib(pid)
    end = time.time() + deadline
    while time.time() < end:
        time.sleep(0.5)  # the sampling interval of a measurement, not a wait for an event
        now = rss_kib(pid)
        if now == last:
            break
        last = now
    return last


class Control:
    """One control-socket session: negotiated, requests with ids, events kept."""

    def __init__(self, path, timeout=60):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buffer = b""
        self.events = []
        self.next_id = 0
        greeting = self.read()
        if "QMP" not in greeting:
            raise Failure(f"no greeting: {greeting}")
        self.request("qmp_capabilities")

    def read(self):
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise Failure("the control socket closed")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)

    def request(self, execute, arguments=None, deadline=120):
        self.next_id += 1
        rid = f"r{self.next_id}"
        message = {"execute": execute, "id": rid}
        if arguments is not None:
            message["arguments"] = arguments
        self.sock.sendall(json.dumps(message).encode() + b"\n")
        end = time.time() + deadline
        while time.time() < end:
            reply = self.read()
            if "event" in reply:
                self.events.append(reply)
                continue
            if reply.get("id") != rid:
                raise Failure(f"reply for {reply.get('id')} while waiting for {rid}: {reply}")
            return reply
        raise Failure(f"no reply to {execute} in {deadline} s")

    def wait_event(self, name, deadline=120):
        end = time.time() + deadline
        while time.time() < end:
            for i, e in enumerate(self.events):
                if e["event"] == name:
                    del self.events[: i + 1]
                    return e
            self.sock.settimeout(max(0.1, end - time.time()))
            try:
                message = self.read()
            except socket.timeout:
                break
            finally:
                self.sock.settimeout(60)
            if "event" in message:
                self.events.append(message)
        raise Failure(f"no {name} event in {deadline} s")

    def agent(self, execute, arguments=None, timeout_ms=30000):
        command = {"execute": execute}
        if arguments is not None:
            command["arguments"] = arguments
        return self.request("agent-command", {"command": command, "timeout-ms": timeout_ms})

    def guest_run(self, argv, deadline=60):
        """guest-exec + guest-exec-status: (exit code, stdout bytes)."""
        started = self.agent("guest-exec", {"path": argv[0], "arg": argv[1:], "capture-output": True})
        if "return" not in started or "return" not in started["return"]:
            raise Failure(f"guest-exec: {started}")
        pid = started["return"]["return"]["pid"]
        end = time.time() + deadline
        while time.time() < end:
            status = self.agent("guest-exec-status", {"pid": pid})
            inner = status.get("return", {}).get("return")
            if inner is None:
                raise Failure(f"guest-exec-status: {status}")
            if inner.get("exited"):
                return inner.get("exitcode"), base64.b64decode(inner.get("out-data", ""))
            time.sleep(0.05)  # polling the guest's process, as qemu-ga clients do
        raise Failure(f"{argv} did not exit in {deadline} s")

    def close(self):
        self.sock.close()


class VM:
    def __init__(self, hostvmm):
        self.hostvmm = hostvmm
        run(hostvmm, "down", NAME, timeout=120)
        up = run(hostvmm, "up", "--name", NAME, "--detach", "--ready-timeout", "300", timeout=400)
        if up.returncode != 0:
            raise Failure(f"hostvmm up: {up.stdout}{up.stderr}")
        status = json.loads(run(hostvmm, "status", NAME).stdout)
        self.state_dir = status["state-dir"]
        self.pid = status["pids"]["hostvmm"]
        self.qemu_pid = status["pids"]["qemu"]
        self.control_path = os.path.join(self.state_dir, "control.sock")
        spice = json.loads(run(hostvmm, "spice", NAME, "--json").stdout)
        self.spice_port = spice["port"]
        with open(spice["password-file"]) as f:
            self.password = f.read().strip()
        self.uri = run(hostvmm, "spice", NAME).stdout.strip()

    def alive(self):
        try:
            os.kill(self.pid, 0)
            return True
        except ProcessLookupError:
            return False


def check_serving(vm, label):
    """A fresh control session answers, the agent answers its own request, and the
    guest's clipboard reaches a SPICE client intact."""
    c = Control(vm.control_path)
    status = c.request("query-status")
    if status.get("return", {}).get("agent", {}).get("ready") is not True:
        c.wait_event("agent-ready", 120)
    token = f"{label}-{random.getrandbits(48):012x}"
    code, out = c.guest_run(["/bin/echo", token])
    if code != 0 or out.decode().strip() != token:
        raise Failure(f"after {label}: guest-exec echo returned {code} {out!r}, expected {token}")
    with tempfile.TemporaryDirectory() as d:
        received = os.path.join(d, "received")
        client = subprocess.Popen(["/usr/bin/python3", os.path.join(CLIENTS, "spice_session.py"), vm.uri, "receive", received],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            wait_line(client, "ready", 90)
            code, _ = c.guest_run(["/bin/sh", "-c", f"printf %s '{token}' | /sbin/guest-agent clipboard set"])
            if code != 0:
                raise Failure(f"after {label}: clipboard set exited {code}")
            wait_line(client, "received", 90)
            with open(received) as f:
                got = f.read()
            if got != token:
                raise Failure(f"after {label}: the client received {got!r}, expected {token!r}")
        finally:
            client.terminate()
            client.wait(10)
    c.close()


def wait_line(process, text, deadline):
    result = []

    def reader():
        for line in process.stdout:
            if text in line:
                result.append(line)
                return

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    t.join(deadline)
    if not result:
        raise Failure(f"the SPICE client did not say '{text}' in {deadline} s")


def control_churn(vm, cycles):
    acknowledged = answered = 0
    for i in range(cycles):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(30)
        s.connect(vm.control_path)
        stage = i % 5
        if stage == 0:
            pass  # gone before reading the greeting
        elif stage == 1:
            s.recv(4096)
            s.sendall(b'{"execute": "qmp_capa')  # gone mid-request
        elif stage == 2:
            s.sendall(b'{"execute": "qmp_capabilities"}{"execute": "query-status", "id": 1}')  # gone without reading
        else:
            f = s.makefile("rb")
            f.readline()
            s.sendall(b'{"execute": "qmp_capabilities"}\n{"execute": "query-status", "id": %d}\n' % i)
            acknowledged += 1
            f.readline()
            reply = json.loads(f.readline())
            if reply.get("id") == i and "return" in reply:
                answered += 1
            f.close()
        s.close()
    return {"injected": cycles, "acknowledged": acknowledged, "answered": answered}


def control_garbage(vm, clients):
    """Each client: random bytes, a 2 MiB line, then (after a resync byte) a real request."""
    results = []
    lock = threading.Lock()

    def one(n):
        outcome = "lost"
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(vm.control_path)  # blocking: waits in the backlog as a QMP client would
            s.settimeout(120)
            f = s.makefile("rb")
            greeting = json.loads(f.readline())
            if "QMP" not in greeting:
                # Over the 64-session bound: hostvmm's documented refusal, then the close.
                with lock:
                    results.append("refused: " + greeting.get("error", {}).get("desc", str(greeting)))
                s.close()
                return
            s.sendall(b'{"execute": "qmp_capabilities"}\n')
            rng = random.Random(n)
            s.sendall(bytes(rng.getrandbits(8) for _ in range(16 << 10)))
            s.sendall(b'{"execute": "query-status", "arguments": {"pad": "' + b"A" * (2 << 20) + b'"}}\n')
            # 0xFF: QEMU's resynchronisation byte; then a request that must be answered.
            s.sendall(b'\xff\n{"execute": "query-status", "id": "last-%d"}\n' % n)
            while True:
                line = f.readline()
                if not line:
                    outcome = "closed"
                    break
                try:
                    reply = json.loads(line)
                except ValueError:
                    continue
                if reply.get("id") == f"last-{n}":
                    outcome = "answered" if "return" in reply else "error"
                    break
            s.close()
        except OSError as e:
            outcome = f"error: {e}"
        with lock:
            results.append(outcome)

    before = rss_kib(vm.pid)
    threads = [threading.Thread(target=one, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    after = settled_rss(vm.pid)
    answered = results.count("answered")
    greeted = len([r for r in results if not r.startswith("refused")])
    return {"injected": clients, "acknowledged": greeted, "answered": answered, "rss": (before, after),
            "detail": {k: results.count(k) for k in set(results)}}


def spice_churn(vm, cycles):
    before = settled_rss(vm.pid)
    linked = 0
    for i in range(cycles):
        if i % 2 == 0:
            session = spice_link.Session("127.0.0.1", vm.spice_port, vm.password)
            display = session.link(DISPLAY_CHANNEL)
            display.close()
            session.close()
            linked += 1
        else:
            channel = spice_link.MainChannel("127.0.0.1", vm.spice_port, vm.password)
            channel.close()
    # spice-server frees a client's channels on its loop after the socket closes:
    # measure once the figure has stopped moving.
    after = settled_rss(vm.pid)
    return {"injected": cycles, "acknowledged": linked, "answered": linked, "rss": (before, after)}


def agent_kill(vm, kills):
    c = Control(vm.control_path)
    answered = wrong = 0
    for i in range(kills):
        # The agent starts a shell that kills it (its parent) a moment after the reply leaves.
        started = c.agent("guest-exec", {"path": "/bin/sh", "arg": ["-c", "sleep 0.2; kill -9 $PPID"]})
        if "return" not in started:
            raise Failure(f"kill {i}: {started}")
        c.wait_event("agent-lost", 60)
        c.wait_event("agent-ready", 120)
        token = f"after-kill-{i}"
        code, out = c.guest_run(["/bin/echo", token])
        if out.decode().strip() == token and code == 0:
            answered += 1
        else:
            wrong += 1
            log(f"kill {i}: expected {token}, got {code} {out!r}")
    c.close()
    return {"injected": kills, "acknowledged": kills, "answered": answered, "wrong": wrong}


def full_disk(vm):
    crashes = os.path.join(vm.state_dir, "crashes")
    os.makedirs(crashes, mode=0o700, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "hostvmm-faults", crashes], check=True)
    try:
        c = Control(vm.control_path)
        c.agent("guest-exec", {"path": "/bin/sh", "arg": ["-c", "sleep 0.5; echo c > /proc/sysrq-trigger"]})
        event = c.wait_event("crash-capture-failed", 300)
        errors = event["data"].get("errors", [])
        if not any("No space left" in e for e in errors):
            raise Failure(f"crash-capture-failed does not say the disk is full: {event}")
        c.wait_event("agent-ready", 300)  # the default policy restarted the guest
        names = os.listdir(crashes)
        staged = [n for n in names if n.startswith(".")]
        bundles = [n for n in names if not n.startswith(".")]
        for b in bundles:
            with open(os.path.join(crashes, b, "event.json")) as f:
                recorded = json.load(f)
            if recorded.get("complete") is not False or os.path.exists(os.path.join(crashes, b, "vmcore")):
                raise Failure(f"bundle {b} does not say it is incomplete: {recorded}")
        if staged:
            raise Failure(f"staging directories left: {staged}")
        c.close()
        return {"injected": 1, "acknowledged": 1, "answered": 1,
                "detail": {"event": "crash-capture-failed", "errors": errors, "bundles": bundles}}
    finally:
        subprocess.run(["umount", crashes])


def qemu_kill(vm):
    c = Control(vm.control_path)
    os.kill(vm.qemu_pid, 9)
    event = c.wait_event("qemu-exited", 60)
    end = time.time() + 60
    while time.time() < end and vm.alive():
        time.sleep(0.1)
    if vm.alive():
        raise Failure("hostvmm is still running 60 s after QEMU was killed")
    left = subprocess.run(["pgrep", "-af", f"qemu-system.* -name {NAME},|hostvmm up --name {NAME} "], capture_output=True, text=True).stdout
    sockets = [n for n in os.listdir(vm.state_dir) if n.endswith(".sock")] if os.path.isdir(vm.state_dir) else []
    if left.strip() or sockets:
        raise Failure(f"left behind: processes {left.strip()!r}, sockets {sockets}")
    return {"injected": 1, "acknowledged": 1, "answered": 1, "detail": {"qemu-exited": event["data"]}}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hostvmm", default=os.environ.get("HOSTVMM", os.path.join(ROOT, ".build", "debug", "hostvmm")))
    parser.add_argument("--agent-kills", type=int, default=100)
    parser.add_argument("--control-cycles", type=int, default=1000)
    parser.add_argument("--garbage-clients", type=int, default=100)
    parser.add_argument("--spice-cycles", type=int, default=1000)
    parser.add_argument("--only", nargs="*", default=None)
    # The first SPICE sessions raise hostvmm's RSS to a plateau (spice-server's per-client
    # caches and encoders: ~12 MB over the first 300 display sessions, then flat); past this
    # many MiB of growth across one fault, the run fails.
    parser.add_argument("--rss-bound-mib", type=int, default=16)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("faults: run as root (full-disk mounts a tmpfs)")

    faults = [
        ("control-churn", lambda vm: control_churn(vm, args.control_cycles)),
        ("control-garbage", lambda vm: control_garbage(vm, args.garbage_clients)),
        ("spice-churn", lambda vm: spice_churn(vm, args.spice_cycles)),
        ("agent-kill", lambda vm: agent_kill(vm, args.agent_kills)),
        ("full-disk", full_disk),
        ("qemu-kill", qemu_kill),
    ]
    if args.only is not None:
        faults = [f for f in faults if f[0] in args.only]
    log(f"booting {NAME} with {args.hostvmm}")
    vm = VM(args.hostvmm)
    rows = []
    failed = False
    for name, inject in faults:
        log(f"{name} ...")
        started = time.time()
        try:
            row = inject(vm)
            if "rss" in row and row["rss"][1] - row["rss"][0] > args.rss_bound_mib << 10:
                raise Failure(f"hostvmm's RSS grew from {row['rss'][0]} to {row['rss'][1]} KiB "
                              f"(bound {args.rss_bound_mib} MiB)")
            if name != "qemu-kill":
                if not vm.alive():
                    raise Failure("hostvmm died")
                check_serving(vm, name)
            row["result"] = "ok"
        except (Failure, OSError, subprocess.SubprocessError, ValueError) as e:
            row = {"result": f"FAILED: {e}"}
            failed = True
        row["seconds"] = round(time.time() - started, 1)
        rows.append((name, row))
        log(f"{name}: {row}")
        if not vm.alive() and name != "qemu-kill":
            log("hostvmm is gone; stopping")
            break
    if vm.alive():
        run(args.hostvmm, "down", NAME, timeout=120)

    print()
    print("| fault | injected | requests acknowledged | answered | lost | misdelivered | hostvmm RSS before -> after (KiB) | s | result |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, row in rows:
        ack, ans = row.get("acknowledged", 0), row.get("answered", 0)
        lost = ack - ans - row.get("wrong", 0)
        failed |= lost != 0 or row.get("wrong", 0) != 0
        rss = row.get("rss")
        rss_text = f"{rss[0]} -> {rss[1]}" if rss else ""
        print(f"| {name} | {row.get('injected', '')} | {ack} | {ans} | {lost} | {row.get('wrong', 0)} | {rss_text} | "
              f"{row['seconds']} | {row['result']} |")
    for name, row in rows:
        if "detail" in row:
            print(f"{name}: {json.dumps(row['detail'])}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
