#!/usr/bin/python3
"""A real SPICE client (spice-gtk's GObject API) for the display and input tests.

Usage:
  spice_devices.py URI inputs          phase 1 (client mouse mode): keys, tablet position/buttons/wheel,
                                       prints "phase1"; then waits until the server switches to server
                                       mouse mode and sends relative motion and a right click, "phase2"
  spice_devices.py URI keys            once the inputs channel is open: presses and releases a, then z
                                       (PC scancodes 0x1e, 0x2c), prints "keys-sent", exits 0
  spice_devices.py URI type TEXT       once the inputs channel is open: types TEXT (a-z, 0-9, space, / . -,
                                       and \n for Enter) as PC scancodes, prints "typed", exits 0
  spice_devices.py URI pointer X Y     once the server offers client mouse mode: moves to (X, Y), left
                                       click, then prints "pointer-sent", exits 0
  spice_devices.py URI motion DX DY    once the server is in server mouse mode (no display): relative
                                       motion, a right click, then prints "motion-sent", exits 0
  spice_devices.py URI monitors W H    asks for a W x H monitor (MainChannel update_display +
                                       send_monitor_config) once the agent is connected: "sent", then
                                       stays connected until killed (at most 60 s). spice-gtk queues
                                       agent messages apart from the socket's queue (sent as the
                                       server's agent tokens allow), so a flush can finish before the
                                       message leaves; the caller kills us once it has seen the effect
  spice_devices.py URI resizes N       once the agent is connected and a primary surface exists: N window
                                       resizes, alternating 800x600 and 640x480; for each prints
                                       "resize W H SECONDS" when the primary surface of that size arrives
  spice_devices.py URI cursor          prints "cursor W H HX HY PIXEL0" for each cursor shape and
                                       "move X Y" for moves, until killed
  spice_devices.py URI leave-early      exits (os._exit, no goodbye) the moment the display channel is
                                       linked, while the server is still starting that channel; prints
                                       "left". Debian's spice-server 0.15.1 dies of this (README)
  spice_devices.py URI usbredir N      prints "usbredir ID" for each UsbredirChannel the session announces;
                                       exits once N were seen ("error: ..." after 30 s otherwise)
  spice_devices.py URI watch SECONDS   display stream: reads pixel (0,0) on each invalidate and prints
                                       "frame N T" when its value N (B + G<<8 + R<<16) changes, T being
                                       CLOCK_MONOTONIC seconds; then "frames K"
Run with Debian's /usr/bin/python3 (it has gi; see ../shared/docs/spice.md §10).
"""
import ctypes
import os
import sys
import time

import gi

gi.require_version("SpiceClientGLib", "2.0")
from gi.repository import GLib, GObject, SpiceClientGLib  # noqa: E402

MOUSE_MODE_SERVER = 1
MOUSE_MODE_CLIENT = 2
BUTTON_LEFT, BUTTON_MIDDLE, BUTTON_RIGHT, BUTTON_UP, BUTTON_DOWN = 1, 2, 3, 4, 5
MASK_LEFT, MASK_MIDDLE, MASK_RIGHT = 1, 2, 4
LOCK_NUM = 2
# PC set-1 scancodes of the characters "type" knows (a US layout, no shift).
SCANCODES = dict(zip("qwertyuiop", range(0x10, 0x1A)))
SCANCODES.update(zip("asdfghjkl", range(0x1E, 0x27)))
SCANCODES.update(zip("zxcvbnm", range(0x2C, 0x33)))
SCANCODES.update(zip("1234567890", range(0x02, 0x0C)))
SCANCODES.update({" ": 0x39, "/": 0x35, ".": 0x34, "-": 0x0C, "\n": 0x1C})


def say(text):
    print(text, flush=True)


def main():
    uri, mode = sys.argv[1], sys.argv[2]
    args = sys.argv[3:]
    session = SpiceClientGLib.Session(uri=uri)
    loop = GLib.MainLoop()
    chans = {}
    opened = set()
    state = {"started": False, "frames": 0, "last": None, "primary": None}

    def later(ms, fn):
        GLib.timeout_add(ms, lambda: fn() and False)

    def flushed_then(channel, text=None):
        """Once everything queued on `channel` is written to its socket: print `text`, quit."""
        def done(ch, result):
            ch.flush_finish(result)
            if text:
                say(text)
            loop.quit()
        channel.flush_async(None, done)

    def fail(text):
        say("error: " + text)
        loop.quit()

    def main_mode():
        return chans["main"].get_property("mouse-mode")

    # ---- inputs -----------------------------------------------------------
    def run_inputs():
        inputs = chans["inputs"]
        # Our client's lock state equals the guest's LEDs (the test set NumLock): no resync.
        inputs.set_key_locks(LOCK_NUM)
        inputs.key_press(0x1E)
        inputs.key_release(0x1E)
        inputs.key_press(0x148)
        inputs.key_release(0x148)
        inputs.key_press(0x21D)  # spice-gtk's Pause: e1 1d, then 45
        inputs.key_press(0x45)
        inputs.key_release(0x21D)
        inputs.key_release(0x45)
        inputs.key_press_and_release(0x11C)
        # Now the client says NumLock is off: the server toggles the guest's NumLock.
        inputs.set_key_locks(0)
        inputs.key_press_and_release(0x2C)  # z: end marker
        # Tablet (client mouse mode): absolute position, a left click, a wheel step.
        inputs.position(100, 200, 0, 0)
        inputs.button_press(BUTTON_LEFT, MASK_LEFT)
        inputs.position(101, 201, 0, MASK_LEFT)
        inputs.button_release(BUTTON_LEFT, 0)
        inputs.button_press(BUTTON_UP, 0)
        inputs.button_release(BUTTON_UP, 0)
        inputs.position(799, 599, 0, 0)
        say("phase1")
        wait_for_server_mode(0)

    def wait_for_server_mode(tries):
        if main_mode() == MOUSE_MODE_SERVER:
            inputs = chans["inputs"]
            inputs.motion(5, -3, 0)
            inputs.button_press(BUTTON_RIGHT, MASK_RIGHT)
            inputs.button_release(BUTTON_RIGHT, 0)
            inputs.button_press(BUTTON_DOWN, 0)
            inputs.button_release(BUTTON_DOWN, 0)
            say("phase2")
            flushed_then(inputs)
        elif tries > 300:
            fail(f"the server did not switch to server mouse mode (mode {main_mode()})")
        else:
            later(100, lambda: wait_for_server_mode(tries + 1))

    # ---- monitors config --------------------------------------------------
    def run_monitors(tries=0):
        main = chans["main"]
        if not main.get_property("agent-connected"):
            if tries > 200:
                fail("no agent")
            else:
                later(100, lambda: run_monitors(tries + 1))
            return
        w, h = int(args[0]), int(args[1])
        main.update_display_enabled(0, True, False)
        main.update_display(0, 0, 0, w, h, False)
        ok = main.send_monitor_config()
        say(f"sent {ok}")
        later(60000, loop.quit)

    # ---- resize latency ---------------------------------------------------
    def next_resize():
        if state["resizes"] == 0:
            loop.quit()
            return
        w, h = (800, 600) if state["resizes"] % 2 == 0 else (640, 480)
        state["want"] = (w, h, time.monotonic())
        main = chans["main"]
        main.update_display_enabled(0, True, False)
        main.update_display(0, 0, 0, w, h, False)
        main.send_monitor_config()
        waited = state["want"]
        later(30000, lambda: state["want"] is waited and fail(f"no {w}x{h} primary within 30 s"))

    def on_resize_primary(_ch, fmt, width, height, stride, _shmid, imgdata):
        want = state.get("want")
        if want and (width, height) == want[:2]:
            say(f"resize {width} {height} {time.monotonic() - want[2]:.3f}")
            state["want"] = None
            state["resizes"] -= 1
            later(500, next_resize)  # let the guest settle before the next one

    def start_resizes(tries=0):
        if not chans["main"].get_property("agent-connected") or "DisplayChannel" not in opened:
            if tries > 300:
                fail("no agent or no display")
            else:
                later(100, lambda: start_resizes(tries + 1))
            return
        later(1000, next_resize)

    # ---- cursor -----------------------------------------------------------
    def on_cursor_set(_ch, width, height, hot_x, hot_y, rgba):
        # spice-gtk hands the shape over as R, G, B, A bytes.
        pixel0 = ctypes.string_at(rgba, 4).hex() if rgba else "none"
        say(f"cursor {width} {height} {hot_x} {hot_y} rgba {pixel0}")

    def on_cursor_move(_ch, x, y):
        say(f"move {x} {y}")

    def on_cursor_hide(_ch):
        say("hide")

    # ---- display ----------------------------------------------------------
    def on_primary(_ch, fmt, width, height, stride, _shmid, imgdata):
        state["primary"] = (imgdata, stride, width, height)
        say(f"primary {width} {height}")

    def on_invalidate(_ch, x, y, w, h):
        p = state["primary"]
        if p is None or x > 0 or y > 0:
            return
        b, g, r = ctypes.string_at(p[0], 3)
        n = b | g << 8 | r << 16
        if n != state["last"]:
            state["last"] = n
            state["frames"] += 1
            say(f"frame {n} {time.clock_gettime(time.CLOCK_MONOTONIC):.6f}")

    def on_event(channel, event):
        if event in (SpiceClientGLib.ChannelEvent.ERROR_CONNECT, SpiceClientGLib.ChannelEvent.ERROR_LINK,
                     SpiceClientGLib.ChannelEvent.ERROR_AUTH, SpiceClientGLib.ChannelEvent.ERROR_IO,
                     SpiceClientGLib.ChannelEvent.CLOSED):
            fail(f"{type(channel).__name__} {event.value_nick}")
        elif event == SpiceClientGLib.ChannelEvent.OPENED:
            if mode == "leave-early" and isinstance(channel, SpiceClientGLib.DisplayChannel):
                say("left")
                os._exit(0)
            opened.add(type(channel).__name__)
            maybe_start()

    def ready(channels, mouse_mode=None):
        """True once `channels` are open (and the server is in `mouse_mode`); else it asks
        again in 100 ms, and gives up with a reason after 60 s of asking."""
        if channels <= opened and (mouse_mode is None or main_mode() == mouse_mode):
            return True
        first = state.setdefault("waiting-since", time.monotonic())
        if time.monotonic() - first > 60:
            missing = sorted(channels - opened)
            fail(f"never ready: channels {missing} not open" if missing else f"never in mouse mode {mouse_mode}")
        else:
            later(100, maybe_start)
        return False

    def maybe_start():
        if state["started"]:
            return
        if mode == "inputs":
            if not ready({"InputsChannel", "MainChannel"}, MOUSE_MODE_CLIENT):
                return
            state["started"] = True
            run_inputs()
        elif mode == "keys":
            if not ready({"InputsChannel"}):
                return
            state["started"] = True
            chans["inputs"].key_press_and_release(0x1E)
            chans["inputs"].key_press_and_release(0x2C)
            flushed_then(chans["inputs"], "keys-sent")
        elif mode == "type":
            if not ready({"InputsChannel"}):
                return
            state["started"] = True
            for ch in args[0].replace("\\n", "\n"):
                chans["inputs"].key_press_and_release(SCANCODES[ch])
            flushed_then(chans["inputs"], "typed")
        elif mode == "pointer":
            # Client mouse mode needs the tablet and a primary surface (the VM's --display).
            if not ready({"InputsChannel", "MainChannel"}, MOUSE_MODE_CLIENT):
                return
            state["started"] = True
            x, y = int(args[0]), int(args[1])
            chans["inputs"].position(x, y, 0, 0)
            chans["inputs"].button_press(BUTTON_LEFT, MASK_LEFT)
            chans["inputs"].button_release(BUTTON_LEFT, 0)
            flushed_then(chans["inputs"], "pointer-sent")
        elif mode == "motion":
            if not ready({"InputsChannel", "MainChannel"}, MOUSE_MODE_SERVER):
                return
            state["started"] = True
            chans["inputs"].motion(int(args[0]), int(args[1]), 0)
            chans["inputs"].button_press(BUTTON_RIGHT, MASK_RIGHT)
            chans["inputs"].button_release(BUTTON_RIGHT, 0)
            flushed_then(chans["inputs"], "motion-sent")
        elif mode == "resizes":
            if "main" not in chans:
                return
            state["started"] = True
            state["resizes"] = int(args[0])
            start_resizes()
        elif mode == "monitors":
            if "main" not in chans:
                return
            state["started"] = True
            run_monitors()

    def on_new(_session, channel):
        GObject.Object.connect(channel, "channel-event", on_event)
        if isinstance(channel, SpiceClientGLib.MainChannel):
            chans["main"] = channel
        elif isinstance(channel, SpiceClientGLib.InputsChannel):
            chans["inputs"] = channel
            channel.connect()
        elif isinstance(channel, SpiceClientGLib.CursorChannel):
            chans["cursor"] = channel
            if mode == "cursor":
                GObject.Object.connect(channel, "cursor-set", on_cursor_set)
                GObject.Object.connect(channel, "cursor-move", on_cursor_move)
                GObject.Object.connect(channel, "cursor-hide", on_cursor_hide)
            channel.connect()
        elif isinstance(channel, SpiceClientGLib.UsbredirChannel):
            if mode == "usbredir":
                state.setdefault("usbredir", []).append(channel.get_property("channel-id"))
                say(f"usbredir {channel.get_property('channel-id')}")
                if len(state["usbredir"]) == int(args[0]):
                    loop.quit()
        elif isinstance(channel, SpiceClientGLib.DisplayChannel):
            chans["display"] = channel
            if mode == "resizes":
                GObject.Object.connect(channel, "display-primary-create", on_resize_primary)
            if mode == "watch":
                GObject.Object.connect(channel, "display-primary-create", on_primary)
                GObject.Object.connect(channel, "display-invalidate", on_invalidate)
            channel.connect()

    GObject.Object.connect(session, "channel-new", on_new)
    limit = float(args[0]) if mode == "watch" else 30 if mode == "usbredir" else 300
    if mode == "usbredir":
        later(int(limit * 1000), lambda: fail("not all usbredir channels within 30 s"))
    GLib.timeout_add(int(limit * 1000), lambda: loop.quit() or False)
    session.connect()
    loop.run()
    if mode == "watch":
        say(f"frames {state['frames']}")
    session.disconnect()


if __name__ == "__main__":
    main()
