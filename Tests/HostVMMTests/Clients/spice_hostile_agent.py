#!/usr/bin/python3
"""A hostile SPICE client for the tests: it speaks the SPICE link protocol by
hand (spice-gtk will not send broken agent messages) on the main channel and
sends the guest agent malformed and oversize VDAgent messages.

Usage:
  spice_hostile_agent.py URI
  spice_hostile_agent.py URI volume playback|capture MUTE VOLUME...
      (not hostile) once the agent has answered, sends one VD_AGENT_AUDIO_VOLUME_SYNC
      (MUTE 0 or 1, one u16 volume per channel), as a client whose audio backend has a
      volume does (spice-gtk sends it only from a real sound device); prints "sent volume"
URI is what `hostvmm spice` prints (spice://HOST?port=N[&password=P]).

It announces the capabilities spice-gtk announces (so the layouts are defined)
and waits for the agent's answer, then sends, as SPICE_MSGC_MAIN_AGENT_DATA
(each one chunk towards the guest):
  1. a message of unknown type 99;
  2. a CLIPBOARD_GRAB whose payload is 2 bytes (too short for any layout);
  3. a CLIPBOARD_REQUEST for clipboard type 0xFFFF;
then announces again and waits for the answer (the agent handles a port's
messages in order, so 1-3 have been read by then), and finally
  4. the start of a CLIPBOARD message declaring 200 MiB (over the 100 MiB limit)
     in five 2 KiB pieces, waits until the server returns tokens for them (so
     they were written to the agent's port: spice-server drops what it still
     queues for a client that leaves), and disconnects in the middle of it.
Prints "agent answered", "sent N", "disconnected"; exit 0 when all went out.
Protocol facts: spice-protocol's protocol.h / enums.h (SpiceLinkHeader, SpiceLinkMess,
SpiceLinkReply, SpiceDataHeader; the ticket is RSA-OAEP(SHA-1) with the server's key);
the link itself is spice_link.py, next to this file.
"""
import socket
import struct
import sys

sys.dont_write_bytecode = True  # no __pycache__ next to the sources
from spice_link import MainChannel, parse_uri  # noqa: E402  (next to this file)

MSG_MAIN_INIT, MSG_MAIN_AGENT_DATA, MSG_MAIN_AGENT_TOKEN = 103, 109, 110
MSGC_MAIN_AGENT_START, MSGC_MAIN_AGENT_DATA = 106, 107
VD_AGENT_PROTOCOL = 1
VD_CLIPBOARD, VD_ANNOUNCE_CAPABILITIES, VD_CLIPBOARD_GRAB, VD_CLIPBOARD_REQUEST = 4, 6, 7, 8
VD_AUDIO_VOLUME_SYNC = 15
SPICE_GTK_CAPS = 0x00035077  # what spice-gtk announces (protocols.md §3.5)


def say(text):
    print(text, flush=True)


def agent_message(msg_type, payload, declared=None):
    size = len(payload) if declared is None else declared
    return struct.pack("<IIQI", VD_AGENT_PROTOCOL, msg_type, 0, size) + payload


def main():
    host, port, password = parse_uri(sys.argv[1])

    channel = MainChannel(host, port, password)
    init = struct.unpack_from("<8I", channel.wait_for(lambda t, _b: t == MSG_MAIN_INIT, "MAIN_INIT"), 0)
    if not init[4]:
        say("error: the server reports no agent")
        return 1
    channel.send(MSGC_MAIN_AGENT_START, struct.pack("<I", 10))

    def announce_and_wait():
        channel.send(MSGC_MAIN_AGENT_DATA, agent_message(VD_ANNOUNCE_CAPABILITIES, struct.pack("<II", 1, SPICE_GTK_CAPS)))
        # The agent's answer: ANNOUNCE_CAPABILITIES with request 0 (the socket timeout bounds the wait).
        channel.wait_for(lambda t, b: t == MSG_MAIN_AGENT_DATA and len(b) >= 24
                         and struct.unpack_from("<II", b, 0) == (VD_AGENT_PROTOCOL, VD_ANNOUNCE_CAPABILITIES)
                         and struct.unpack_from("<I", b, 20)[0] == 0, "the agent's capabilities")
        say("agent answered")

    announce_and_wait()
    if len(sys.argv) > 2 and sys.argv[2] == "volume":
        volumes = [int(v) for v in sys.argv[5:]]
        payload = struct.pack("<BBB", sys.argv[3] == "playback", int(sys.argv[4]), len(volumes))
        payload += b"".join(struct.pack("<H", v) for v in volumes)
        channel.send(MSGC_MAIN_AGENT_DATA, agent_message(VD_AUDIO_VOLUME_SYNC, payload))
        # The agent handles a port's messages in order: its answer to a new announce
        # means the volume was read.
        announce_and_wait()
        say("sent volume")
        return 0
    attacks = [
        agent_message(99, b"\0\0\0\0"),
        agent_message(VD_CLIPBOARD_GRAB, b"\1\2"),
        agent_message(VD_CLIPBOARD_REQUEST, struct.pack("<BxxxI", 0, 0xFFFF)),
    ]
    for n, data in enumerate(attacks, 1):
        channel.send(MSGC_MAIN_AGENT_DATA, data)
        say(f"sent {n}")
    announce_and_wait()

    # 4: 200 MiB declared, five pieces sent. Ten tokens from AGENT_START cover the
    # ten messages; spice-server returns tokens in batches of five once written.
    channel.send(MSGC_MAIN_AGENT_DATA, agent_message(VD_CLIPBOARD, struct.pack("<BxxxI", 0, 1) + b"x" * 2000,
                                                     declared=200 << 20))
    for _ in range(4):
        channel.send(MSGC_MAIN_AGENT_DATA, b"y" * 2048)
    channel.wait_for(lambda t, _b: t == MSG_MAIN_AGENT_TOKEN, "tokens back")
    say("sent 4")
    channel.sock.shutdown(socket.SHUT_RDWR)
    channel.sock.close()
    say("disconnected")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (OSError, ConnectionError) as error:
        say(f"error: {error}")
        sys.exit(1)
