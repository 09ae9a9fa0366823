#!/usr/bin/python3
"""How long a SPICE client waits, after it asks for a new window size, until the
guest's screen arrives at that size: hostvmm's stack (SpiceBridge -> our
virtio-gpu's display info and EDID, QEMU's D-Bus console raising the display
event for vhost-user-gpu-pci) against QEMU's own virtio-gpu-pci + -spice (the
client's monitors config goes to QEMU's SPICE display, which raises the same
event). Same embedded guest; its fbdev console switches mode in both.

The client (Tests/HostVMMTests/Clients/spice_devices.py "resizes") alternates
800x600 and 640x480 and times each from send_monitor_config to the primary
surface of that size. Reported: median and worst per stack, and the ratio of
medians.

Usage: Benchmarks/display_resize.py [RESIZES] (default 10). Needs what
display_fps.py needs (a built hostvmm and image, qemu-system-modules-spice for
the reference). Boots one guest at a time.
"""
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import display_fps  # noqa: E402

RESIZES = int(sys.argv[1]) if len(sys.argv) > 1 else 10


def resizes(uri):
    out = subprocess.run(["/usr/bin/python3", display_fps.CLIENT, uri, "resizes", str(RESIZES)],
                         capture_output=True, text=True, timeout=120 + 40 * RESIZES).stdout
    times = [float(l.split()[3]) for l in out.splitlines() if l.startswith("resize ")]
    if len(times) != RESIZES:
        raise SystemExit(f"the client saw {len(times)} of {RESIZES} resizes: {out[-500:]}")
    return times


def report(name, times):
    print(f"{name}: median {1000 * statistics.median(times):.0f} ms, worst {1000 * max(times):.0f} ms "
          f"over {len(times)} resizes", flush=True)


def main():
    with display_fps.ours_vm(label="display") as (_agent, uri, _pids, query):
        ours = resizes(uri)
        live = query("display").get("live-resize")
    report(f"hostvmm (vhost-user-gpu, live resize {live})", ours)
    if not display_fps.qemu_has_spice():
        return
    with display_fps.reference_vm(display_fps.REFERENCE_DEVICES, label="display-qemu",
                                  append=display_fps.REFERENCE_APPEND) as (_agent, uri, _pids):
        theirs = resizes(uri)
    report("QEMU virtio-gpu-pci + -spice", theirs)
    print(f"ratio ours/QEMU (median): {statistics.median(ours) / statistics.median(theirs):.2f}x")


if __name__ == "__main__":
    main()
