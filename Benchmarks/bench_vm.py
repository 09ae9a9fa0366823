"""A guest booted by hostvmm for the benchmarks, with the agent calls they share."""
import base64
import json
import os
import subprocess
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
