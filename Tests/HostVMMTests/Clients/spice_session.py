#!/usr/bin/python3
"""A real SPICE client (spice-gtk's GObject API) for the tests.

Usage: spice_session.py URI connect
Prints one line: "opened" when the main channel is up, "auth-failed" when the
server refused the ticket, "error: ..." otherwise; exit status 0 only for "opened".
Run with Debian's /usr/bin/python3 (it has gi; see ../shared/docs/spice.md §10).
"""
import sys

import gi

gi.require_version("SpiceClientGLib", "2.0")
from gi.repository import GLib, GObject, SpiceClientGLib  # noqa: E402


def main():
    uri = sys.argv[1]
    session = SpiceClientGLib.Session(uri=uri)
    loop = GLib.MainLoop()
    result = {"status": "error: timeout"}

    def finish(status):
        result["status"] = status
        loop.quit()

    def on_event(channel, event):
        if event == SpiceClientGLib.ChannelEvent.OPENED:
            finish("opened")
        elif event == SpiceClientGLib.ChannelEvent.ERROR_AUTH:
            finish("auth-failed")
        elif event in (SpiceClientGLib.ChannelEvent.ERROR_CONNECT, SpiceClientGLib.ChannelEvent.ERROR_LINK,
                       SpiceClientGLib.ChannelEvent.ERROR_IO, SpiceClientGLib.ChannelEvent.ERROR_TLS,
                       SpiceClientGLib.ChannelEvent.CLOSED):
            finish(f"error: {event.value_nick}")

    def on_new(_session, channel):
        if isinstance(channel, SpiceClientGLib.MainChannel):
            # Channel.connect() is spice_channel_connect; hook signals through GObject.
            GObject.Object.connect(channel, "channel-event", on_event)

    GObject.Object.connect(session, "channel-new", on_new)
    GLib.timeout_add_seconds(20, lambda: finish("error: timeout") or False)
    session.connect()
    loop.run()
    session.disconnect()
    print(result["status"])
    sys.exit(0 if result["status"] == "opened" else 1)


if __name__ == "__main__":
    main()
