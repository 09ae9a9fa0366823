#!/usr/bin/python3
"""A real SPICE client (spice-gtk's GObject API) for the audio tests and benchmark.

Usage:
  spice_audio.py URI listen OUT SECONDS   connects the playback channel; prints "start FORMAT CHANNELS RATE" on
                                          playback-start, appends the decoded PCM (S16LE) it receives to OUT, prints
                                          "stop" on playback-stop; ends after SECONDS with "bytes N"
  spice_audio.py URI clicks SECONDS       prints "click T" (CLOCK_MONOTONIC seconds) for each playback packet whose
                                          peak first exceeds half scale after a quiet packet; ends after SECONDS
  spice_audio.py URI mic HZ SECONDS       connects the record channel; once the server starts recording
                                          ("record-start F C R"), sends a HZ sine (-6 dBFS) as the microphone in
                                          real time, 10 ms a packet, for SECONDS; prints "sent N" and exits
  spice_audio.py URI quit-after-start     exits abruptly (os._exit) as soon as playback-start arrives: "left"
Run with Debian's /usr/bin/python3 (it has gi; see ../shared/docs/spice.md §10). Audio devices of the client
itself are kept out of the way: spice-gtk's GStreamer backend, which the guest agent's capabilities make it
create, gets a fake sink at full volume (SPICE_GST_AUDIOSINK) so the machine needs no sound card.
"""
import array
import ctypes
import math
import os
import sys
import time

# A volume element named "audiosink": spice-gtk reads the client's volume from it (1.0) and
# sends it to the guest agent; a sink without one would be reported as volume 0.
os.environ.setdefault("SPICE_GST_AUDIOSINK", "appsrc name=appsrc ! volume name=audiosink ! fakesink")

import gi  # noqa: E402

gi.require_version("SpiceClientGLib", "2.0")
from gi.repository import GLib, GObject, SpiceClientGLib  # noqa: E402

on = GObject.Object.connect  # Session.connect/Channel.connect shadow GObject's signal hookup


def say(text):
    print(text, flush=True)


def main():
    uri, mode = sys.argv[1], sys.argv[2]
    args = sys.argv[3:]
    session = SpiceClientGLib.Session(uri=uri)
    loop = GLib.MainLoop()
    state = {"bytes": 0, "quiet": True, "sent": 0}
    out = open(args[0], "ab") if mode == "listen" else None
    seconds = float(args[-1]) if mode != "quit-after-start" else 120

    def on_playback_start(_ch, fmt, channels, rate):
        say(f"start {fmt} {channels} {rate}")
        if mode == "quit-after-start":
            say("left")
            os._exit(0)

    def on_playback_data(_ch, ptr, size):
        data = ctypes.string_at(ptr, size)
        if out:
            out.write(data)
            out.flush()
        state["bytes"] += size
        if mode == "clicks":
            peak = max((abs(s) for s in array.array("h", data)), default=0)
            if peak > 16384 and state["quiet"]:
                say(f"click {time.clock_gettime(time.CLOCK_MONOTONIC):.6f}")
            state["quiet"] = peak < 1000

    def on_record_start(ch, fmt, channels, rate):
        say(f"record-start {fmt} {channels} {rate}")
        hz = float(args[0])
        frames = rate // 100
        total = int(float(args[1]) * 100)
        t0 = time.monotonic()
        phase = [0]

        def push():
            # Catch up with the clock: as many 10 ms packets as are due.
            due = min(total, int((time.monotonic() - t0) * 100) + 1)
            while state["sent"] < due:
                samples = array.array("h")
                for _ in range(frames):
                    v = int(16384 * math.sin(2 * math.pi * hz * phase[0] / rate))
                    phase[0] += 1
                    samples.extend([v] * channels)
                buf = ctypes.create_string_buffer(samples.tobytes())
                ch.send_data(ctypes.addressof(buf), len(samples) * 2, 0)
                state["sent"] += 1
            if state["sent"] >= total:
                say(f"sent {state['sent']}")
                loop.quit()
                return False
            return True

        GLib.timeout_add(5, push)

    def on_channel(_session, channel):
        if isinstance(channel, SpiceClientGLib.PlaybackChannel) and mode != "mic":
            on(channel, "playback-start", on_playback_start)
            on(channel, "playback-data", on_playback_data)
            on(channel, "playback-stop", lambda _c: say("stop"))
            SpiceClientGLib.Channel.connect(channel)
        elif isinstance(channel, SpiceClientGLib.RecordChannel) and mode == "mic":
            on(channel, "record-start", on_record_start)
            on(channel, "record-stop", lambda _c: say("record-stop"))
            SpiceClientGLib.Channel.connect(channel)
        elif isinstance(channel, SpiceClientGLib.MainChannel):
            on(channel, "channel-event", on_event)

    def on_event(_channel, event):
        if event == SpiceClientGLib.ChannelEvent.OPENED:
            say("connected")
        elif event != SpiceClientGLib.ChannelEvent.NONE:
            say(f"error: {event.value_nick}")
            loop.quit()

    on(session, "channel-new", on_channel)
    SpiceClientGLib.Session.connect(session)
    GLib.timeout_add(int(seconds * 1000), loop.quit)
    loop.run()
    if mode in ("listen", "clicks"):
        say(f"bytes {state['bytes']}")
    session.disconnect()
    sys.exit(0)


if __name__ == "__main__":
    main()
