#!/usr/bin/env python3
"""Time to lock the desktop guest's sessions from the host, two ways, in one run:

  ours:   `hostvmm lock` -> guest-agent __org.hostvmm_guest-lock-screen -> logind LockSession
  anchor: what the C stack offers (qemu-ga has no lock command): guest-exec of
          `loginctl lock-sessions` through the agent, polled with guest-exec-status
          until it exits, as libvirt/Proxmox scripts do

Both end when logind has been asked to lock; each round is followed by an unlock.
Also: from the SPICE client disconnecting to the guest-locked event (grace 5 s
excluded). Usage: Benchmarks/lock.py [ROUNDS]   (root; builds the desktop image if needed)
"""
import json
import statistics
import subprocess
import sys
import time

from bench_vm import HOSTVMM, ROOT, BenchVM

CLIENT = f"{ROOT}/Tests/HostVMMTests/Clients/spice_session.py"


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    vm = BenchVM("benchlock", "--image", "desktop")
    try:
        # The autologin session appears a few seconds after the agent.
        for _ in range(120):
            if "tty1" in vm.guest_run("loginctl list-sessions --no-legend"):
                break
            time.sleep(0.5)
        ours, anchor = [], []
        for _ in range(rounds):
            start = time.monotonic()
            vm.cli("lock", vm.name)
            ours.append(time.monotonic() - start)
            vm.guest_run("loginctl unlock-sessions")
            start = time.monotonic()
            vm.guest_run("loginctl lock-sessions")
            anchor.append(time.monotonic() - start)
            vm.guest_run("loginctl unlock-sessions")
        m_ours, m_anchor = statistics.median(ours), statistics.median(anchor)
        print(f"lock from the host, median of {rounds}: hostvmm lock {m_ours * 1000:.0f} ms, "
              f"guest-exec loginctl {m_anchor * 1000:.0f} ms, ratio {m_ours / m_anchor:.2f}")

        # SPICE client leaves: how long after the grace period the host hears of the lock.
        uri = vm.cli("spice", vm.name).strip()
        events = subprocess.Popen([HOSTVMM, "events", vm.name], env=vm.env,
                                  stdout=subprocess.PIPE, text=True)
        client = subprocess.Popen(["/usr/bin/python3", CLIENT, uri, "receive", "/dev/null"], stdout=subprocess.PIPE,
                                  text=True)
        for line in client.stdout:
            if "ready" in line:
                break
        client.terminate()
        left = time.monotonic()
        client.wait()
        for line in events.stdout:
            event = json.loads(line)
            if event.get("event") == "guest-locked":
                print(f"client left -> guest-locked event: {time.monotonic() - left:.2f} s "
                      f"(grace {event['data'].get('grace-seconds')} s)")
                break
        events.terminate()
    finally:
        vm.close()


if __name__ == "__main__":
    main()
