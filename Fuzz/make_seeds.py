#!/usr/bin/env python3
"""Writes the committed seed corpus (Fuzz/corpus/TARGET/NAME): one or two
well-formed inputs per target, in each harness's input layout (see the
targets in Fuzz/Sources/HostVMMFuzz), so the fuzzer starts inside the format.
Run it again after changing a harness's layout; scripts/fuzz.sh only reads them."""
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def put(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def vd_message(mtype, payload, proto=1):
    return struct.pack("<IIQI", proto, mtype, 0, len(payload)) + payload


def vd_chunk(port, data):
    return struct.pack("<II", port, len(data)) + data


# json
put("json", "request", b'{"execute": "guest-exec", "arguments": {"path": "/bin/true", "arg": ["-x", "\\u00e9"], '
    b'"env": [], "capture-output": true, "n": -12, "u": 18446744073709551615, "d": 2.5e-3, "z": null}}')
put("json", "nested", b'[[[{"a": [1, 2, {"b": false}]}]], "x\\n\\"y", 0.0, -0]')

# QGA and the control socket: seed byte for read splits, then the stream.
stream = (b'\xff{"execute": "guest-sync-delimited", "arguments": {"id": 1234}}'
          b'{"execute":"guest-ping"}\n{"execute": "guest-info", "id": "a"}\x1b{"execute"')
put("qga-framer", "sync-and-requests", b"\x05" + stream)
put("control-framer", "qmp", b"\x09" + b'{"execute": "qmp_capabilities"}{"execute": "query-status", "arguments": {}}\n'
    b'{"execute": "agent-command", "arguments": {"command": {"execute": "guest-ping"}}}')

# VDAgent (guest <-> host): seed, capabilities (2 bytes), chunks.
grab = vd_message(4, struct.pack("<BxxxI", 0, 1))          # CLIPBOARD_GRAB, UTF8_TEXT
clip = vd_message(3, struct.pack("<BxxxI", 0, 1) + b"hello")  # CLIPBOARD
caps = vd_message(6, struct.pack("<II", 1, 0x7FF))          # ANNOUNCE_CAPABILITIES
long_clip = vd_message(3, struct.pack("<BxxxI", 0, 1) + b"A" * 3000)
stream = vd_chunk(1, caps) + vd_chunk(1, grab) + vd_chunk(1, clip) + vd_chunk(1, long_clip[:2048]) \
    + vd_chunk(2, vd_message(9, b"")) + vd_chunk(1, long_clip[2048:])
put("vdagent-reader", "clipboard", b"\x03\xff\x07" + stream)
put("guest-stream-filter", "clipboard", b"\x03" + stream)
notice = struct.pack("<II", 0x686F7374, 27) + b'{"event": "guest-locked"}\n\n'
put("guest-stream-filter", "notice", b"\x07" + vd_chunk(2, notice[:8] + notice[8:]) + vd_chunk(1, grab))
# MONITORS_CONFIG from spice-gtk: flags PHYSICAL_SIZE|USE_POS, 1 monitor, then its millimetres.
monitors = struct.pack("<II", 1, 0x6) + struct.pack("<IIIii", 600, 800, 32, 0, 0) + struct.pack("<HH", 300, 200)
put("monitors-config-rewriter", "spice-gtk", b"\x02" + vd_chunk(1, vd_message(2, monitors)) + vd_chunk(1, grab))


# D-Bus: a method call (org.freedesktop.login1 LockSession-like) with a string body.
def dbus_pad(b, n):
    return b + b"\0" * ((-len(b)) % n)


def dbus_field(code, sig, value):
    v = value.encode()
    if sig == "o" or sig == "s":
        body = struct.pack("<I", len(v)) + v + b"\0"
    else:  # "g"
        body = bytes([len(v)]) + v + b"\0"
    return bytes([code, 1]) + sig.encode() + b"\0" + body


fields = b""
for code, sig, value in [(1, "o", "/org/freedesktop/login1/session/auto"), (2, "s", "org.freedesktop.login1.Session"),
                         (3, "s", "Lock"), (6, "s", "org.freedesktop.login1"), (8, "g", "s")]:
    fields = dbus_pad(fields, 8) + dbus_field(code, sig, value)
body = struct.pack("<I", 5) + b"hello\0"
header = b"l" + bytes([1, 0, 1]) + struct.pack("<II", len(body), 7) + struct.pack("<I", len(fields)) + fields
put("dbus-message", "method-call", dbus_pad(header, 8) + body)


# vhost-user: header {request, flags (version 1), size} + payload.
def vu(request, payload):
    return struct.pack("<III", request, 1, len(payload)) + payload


put("vhost-user-message", "set-vring-addr", vu(9, struct.pack("<IIQQQQ", 0, 0, 0x1000, 0x2000, 0x3000, 0)))
put("vhost-user-message", "set-mem-table", vu(5, struct.pack("<II", 1, 0) + struct.pack("<QQQQ", 0, 1 << 20, 0x7f0000000000, 0)))
put("vhost-user-message", "get-config", vu(24, struct.pack("<III", 0, 8, 0) + bytes(8)))

# virtqueue: size (1 << (b % 6)), flags, maxChainBytes/64 (u16), table, avail ring, indirect area.
table = struct.pack("<QIHH", 0x2_0000, 64, 1, 1) + struct.pack("<QIHH", 0x10_0000, 32, 4, 0) \
    + struct.pack("<QIHH", 0x3_0000, 128, 2, 0) + bytes(16 * 5)
avail = struct.pack("<HH", 0, 2) + struct.pack("<HHHHHHHH", 0, 2, 0, 0, 0, 0, 0, 0) + struct.pack("<H", 0)
indirect = struct.pack("<QIHH", 0x4_0000, 16, 1, 1) + struct.pack("<QIHH", 0x5_0000, 16, 2, 0)
put("virtqueue", "direct-and-indirect", bytes([3, 7]) + struct.pack("<H", 1024) + table + avail + indirect)


# Devices: op (queue in the low bits, < 0x80), request length (u16), request, writable length (u16).
def request(queue, data, writable):
    return bytes([queue]) + struct.pack("<H", len(data)) + data + struct.pack("<H", writable)


def gpu_header(t):
    return struct.pack("<IIQIBBBB", t, 0, 0, 0, 0, 0, 0, 0)


gpu = request(0, gpu_header(0x0100), 408)  # GET_DISPLAY_INFO
gpu += request(0, gpu_header(0x0101) + struct.pack("<IIII", 1, 1, 64, 64), 24)  # RESOURCE_CREATE_2D
gpu += bytes([0x80, 8]) + bytes(range(128))  # backing page 0
gpu += request(0, gpu_header(0x0106) + struct.pack("<II", 1, 1) + struct.pack("<QII", 0x40_0000, 16384, 0), 24)  # ATTACH_BACKING
gpu += request(0, gpu_header(0x0103) + struct.pack("<IIIIII", 0, 0, 64, 64, 0, 1), 24)  # SET_SCANOUT
gpu += request(0, gpu_header(0x0105) + struct.pack("<IIIIQII", 0, 0, 64, 64, 0, 1, 0), 24)  # TRANSFER_TO_HOST_2D
gpu += request(0, gpu_header(0x0104) + struct.pack("<IIIIII", 0, 0, 64, 64, 1, 0), 24)  # RESOURCE_FLUSH
gpu += request(1, gpu_header(0x0301) + struct.pack("<IIII", 0, 10, 10, 0) + struct.pack("<III", 0, 0, 0), 0)  # MOVE_CURSOR
put("virtio-gpu", "display", gpu)
# virtio-input: event buffers on queue 0, an LED event on the status queue, config reads/writes.
inp = request(0, b"", 8) * 3 + request(1, struct.pack("<HHI", 0x11, 1, 1), 0) + bytes([0xC1, 1, 0x11, 0])
put("virtio-input", "events-and-status", inp)
# virtio-snd: PCM_INFO, SET_PARAMS, PREPARE, START on control (0), a tx transfer (2), ticks.
snd = request(0, struct.pack("<IIII", 0x0100, 0, 2, 32), 8 + 2 * 32)  # PCM_INFO
snd += request(0, struct.pack("<IIIIIBBBx", 0x0101, 0, 4096, 1024, 0, 2, 5, 7), 4)  # SET_PARAMS S16 48k
snd += request(0, struct.pack("<II", 0x0102, 0), 4) + request(0, struct.pack("<II", 0x0104, 0), 4)  # PREPARE, START
snd += request(2, struct.pack("<I", 0) + bytes(1024), 8) + bytes([0xC0, 20, 0xC0, 20])
put("virtio-snd", "playback", snd)


# usbredir: seed, hello-first flag, then the client's stream (32-bit ids until both hellos).
def ur(t, payload, pid=0):
    return struct.pack("<III", t, len(payload), pid) + payload


hello = ur(0, b"spice-gtk usbredir".ljust(64, b"\0") + struct.pack("<I", 0x1FFF))
# After hellos with 64-bit ids the header is {type, length, id u64}.
def ur64(t, payload, pid=0):
    return struct.pack("<IIQ", t, len(payload), pid) + payload


connect = ur64(1, struct.pack("<BBBBHHHH", 2, 0x08, 0x06, 0x50, 0x1234, 0x5678, 0x0200, 0x0100))
iface = ur64(4, struct.pack("<I", 1) + bytes(32 * 4))
ep = ur64(5, bytes(32) + bytes(32) + bytes(32 * 2) + bytes(32 * 4))
put("usbredir-stream", "device", b"\x04\x00" + hello + iface + ep + connect)
put("usbredir-filter", "rules", b"0x08,-1,-1,-1,1|-1,0x1234,0x5678,0x0200,0|-1,-1,-1,-1,0")
