#!/usr/bin/python3
"""A real SPICE client (spice-gtk's GObject API) for the tests.

Usage:
  spice_session.py URI connect        "opened" / "auth-failed" / "error: ..."; exit 0 only for "opened"
  spice_session.py URI send FILE      grab the clipboard with FILE's bytes as UTF-8 text ("grabbed") and
                                      serve the guest's requests; prints "served N" for each; runs until
                                      killed (or 300 s)
  spice_session.py URI receive FILE   print "ready" once the agent is connected, then wait for the guest
                                      to grab its clipboard, fetch it, write it to FILE, print "received N"
Run with Debian's /usr/bin/python3 (it has gi; see ../shared/docs/spice.md §10).
"""
import ctypes
import sys

import gi

gi.require_version("SpiceClientGLib", "2.0")
from gi.repository import GLib, GObject, SpiceClientGLib  # noqa: E402

CLIPBOARD = 0
UTF8_TEXT = 1
CAP_CLIPBOARD_BY_DEMAND = 5


def say(text):
    print(text, flush=True)


def main():
    uri, mode = sys.argv[1], sys.argv[2]
    path = sys.argv[3] if len(sys.argv) > 3 else None
    session = SpiceClientGLib.Session(uri=uri)
    loop = GLib.MainLoop()
    result = {"status": "error: timeout", "code": 1}
    payload = open(path, "rb").read() if mode == "send" else None

    def finish(status, code=1):
        result["status"], result["code"] = status, code
        loop.quit()

    state = {"ready": False}

    def agent_ready(channel):
        if state["ready"]:
            return
        # The clipboard calls do nothing until the agent's capabilities have arrived.
        if not channel.agent_test_capability(CAP_CLIPBOARD_BY_DEMAND):
            GLib.timeout_add(100, lambda: agent_ready(channel) or False)
            return
        state["ready"] = True
        if mode == "send":
            channel.clipboard_selection_grab(CLIPBOARD, [UTF8_TEXT])
            say("grabbed")
        elif mode == "receive":
            say("ready")

    def on_event(channel, event):
        if event == SpiceClientGLib.ChannelEvent.OPENED:
            if mode == "connect":
                finish("opened", 0)
        elif event == SpiceClientGLib.ChannelEvent.ERROR_AUTH:
            finish("auth-failed")
        elif event in (SpiceClientGLib.ChannelEvent.ERROR_CONNECT, SpiceClientGLib.ChannelEvent.ERROR_LINK,
                       SpiceClientGLib.ChannelEvent.ERROR_IO, SpiceClientGLib.ChannelEvent.ERROR_TLS,
                       SpiceClientGLib.ChannelEvent.CLOSED):
            finish(f"error: {event.value_nick}")

    def on_agent_update(channel):
        if channel.get_property("agent-connected"):
            agent_ready(channel)

    def on_selection_request(channel, selection, data_type):
        if mode != "send" or data_type != UTF8_TEXT:
            return False
        channel.clipboard_selection_notify(selection, data_type, payload)
        say(f"served {len(payload)}")
        return True

    def on_selection_grab(channel, selection, _types, _ntypes):
        if mode == "receive":
            channel.clipboard_selection_request(selection, UTF8_TEXT)
        return True

    def on_selection(channel, selection, data_type, data, size):
        if mode != "receive":
            return
        with open(path, "wb") as f:
            f.write(ctypes.string_at(data, size) if size else b"")
        say(f"received {size}")
        finish("received", 0)

    def on_new(_session, channel):
        if isinstance(channel, SpiceClientGLib.MainChannel):
            # Channel.connect() is spice_channel_connect; hook signals through GObject.
            GObject.Object.connect(channel, "channel-event", on_event)
            GObject.Object.connect(channel, "main-agent-update", on_agent_update)
            GObject.Object.connect(channel, "main-clipboard-selection-request", on_selection_request)
            GObject.Object.connect(channel, "main-clipboard-selection-grab", on_selection_grab)
            GObject.Object.connect(channel, "main-clipboard-selection", on_selection)

    GObject.Object.connect(session, "channel-new", on_new)
    GLib.timeout_add_seconds(20 if mode == "connect" else 300, lambda: finish("error: timeout") or False)
    session.connect()
    loop.run()
    session.disconnect()
    say(result["status"])
    sys.exit(result["code"])


if __name__ == "__main__":
    main()
