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
SpiceLinkReply, SpiceDataHeader; the ticket is RSA-OAEP(SHA-1) with the server's key).
"""
import socket
import struct
import sys
import urllib.parse

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

MAGIC = b"REDQ"
CHANNEL_MAIN = 1
MSG_SET_ACK, MSG_PING = 3, 4
MSGC_ACK_SYNC, MSGC_ACK, MSGC_PONG = 1, 2, 3
MSG_MAIN_INIT, MSG_MAIN_AGENT_DATA, MSG_MAIN_AGENT_TOKEN = 103, 109, 110
MSGC_MAIN_AGENT_START, MSGC_MAIN_AGENT_DATA = 106, 107
VD_AGENT_PROTOCOL = 1
VD_CLIPBOARD, VD_ANNOUNCE_CAPABILITIES, VD_CLIPBOARD_GRAB, VD_CLIPBOARD_REQUEST = 4, 6, 7, 8
VD_AUDIO_VOLUME_SYNC = 15
SPICE_GTK_CAPS = 0x00035077  # what spice-gtk announces (protocols.md §3.5)


def say(text):
    print(text, flush=True)


def recv_exact(sock, n):
    data = b""
    while len(data) < n:
        part = sock.recv(n - len(data))
        if not part:
            raise ConnectionError(f"server closed the connection ({len(data)} of {n} bytes)")
        data += part
    return data


class MainChannel:
    def __init__(self, host, port, password):
        self.sock = socket.create_connection((host, port), timeout=30)
        self.serial = 0
        self.received = 0
        self.ack_window = 0
        # No common caps: no auth selection (plain ticket), full data headers.
        link = struct.pack("<IBBIII", 0, CHANNEL_MAIN, 0, 0, 0, 18)
        self.sock.sendall(MAGIC + struct.pack("<III", 2, 2, len(link)) + link)
        magic, major, _minor, size = struct.unpack("<4sIII", recv_exact(self.sock, 16))
        if magic != MAGIC or major != 2:
            raise ConnectionError(f"not a SPICE server: {magic!r} {major}")
        reply = recv_exact(self.sock, size)
        error = struct.unpack_from("<I", reply, 0)[0]
        if error:
            raise ConnectionError(f"link refused: error {error}")
        key = serialization.load_der_public_key(reply[4:4 + 162])
        ticket = key.encrypt(password.encode() + b"\0",
                             padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None))
        self.sock.sendall(ticket)
        result = struct.unpack("<I", recv_exact(self.sock, 4))[0]
        if result:
            raise ConnectionError(f"ticket refused: link result {result}")

    def send(self, msg_type, body):
        self.serial += 1
        self.sock.sendall(struct.pack("<QHII", self.serial, msg_type, len(body), 0) + body)

    def receive(self):
        _serial, msg_type, size, _sub = struct.unpack("<QHII", recv_exact(self.sock, 18))
        return msg_type, recv_exact(self.sock, size)

    def next_message(self):
        """The next message the test cares about; answers the housekeeping ones."""
        while True:
            msg_type, body = self.receive()
            self.received += 1
            if self.ack_window and self.received % self.ack_window == 0:
                self.send(MSGC_ACK, b"")
            if msg_type == MSG_SET_ACK:
                generation, self.ack_window = struct.unpack_from("<II", body, 0)
                self.send(MSGC_ACK_SYNC, struct.pack("<I", generation))
            elif msg_type == MSG_PING:
                self.send(MSGC_PONG, body[:12])
            else:
                return msg_type, body

    def wait_for(self, wanted, what):
        while True:
            msg_type, body = self.next_message()
            if wanted(msg_type, body):
                return body

def agent_message(msg_type, payload, declared=None):
    size = len(payload) if declared is None else declared
    return struct.pack("<IIQI", VD_AGENT_PROTOCOL, msg_type, 0, size) + payload


def main():
    uri = urllib.parse.urlparse(sys.argv[1])
    query = urllib.parse.parse_qs(uri.query)
    host = uri.hostname or "127.0.0.1"
    port = int(query.get("port", [uri.port or 5900])[0])
    password = query.get("password", [""])[0]

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
