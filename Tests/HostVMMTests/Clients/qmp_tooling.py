"""QEMU's own Python QMP library (PyPI qemu.qmp, in the venv scripts/setup.sh makes at
/usr/local/lib/hostvmm/qmp-venv) against hostvmm's control socket, as a QMP client would
use it against QEMU (issue #16).

Usage: qmp-venv/bin/python qmp_tooling.py SOCKET

Prints one line per step, each a fact the test checks:
  negotiated PACKAGE        the greeting parsed and qmp_capabilities answered (the library
                            sends it with no newline)
  status STATE              query-status's "state"
  pipelined N               N commands sent before any reply came back, all answered
  error CLASS               an unknown command's error class
  event NAME                the first event after `shutdown` (mode acpi) was asked for
"""
import asyncio
import sys

from qemu.qmp import ExecuteError, QMPClient


async def main(socket_path):
    qmp = QMPClient("hostvmm-test")
    await asyncio.wait_for(qmp.connect(socket_path), 30)
    print(f"negotiated {qmp.greeting.QMP.version['package']}", flush=True)

    status = await asyncio.wait_for(qmp.execute("query-status"), 30)
    print(f"status {status['state']}", flush=True)

    # All written before any reply is read: the replies must each find their request.
    replies = await asyncio.wait_for(asyncio.gather(*(qmp.execute("query-status") for _ in range(8))), 30)
    if all(r["state"] == status["state"] for r in replies):
        print(f"pipelined {len(replies)}", flush=True)

    try:
        await asyncio.wait_for(qmp.execute("no-such-command"), 30)
    except ExecuteError as error:
        print(f"error {error.error_class}", flush=True)

    await asyncio.wait_for(qmp.execute("shutdown", {"mode": "acpi"}), 60)
    event = await asyncio.wait_for(qmp.events.get(), 120)
    print(f"event {event['event']}", flush=True)
    await qmp.disconnect()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
