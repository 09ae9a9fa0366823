"""The SPICE link protocol by hand, shared by the tests' Python SPICE clients
(spice_hostile_agent.py, usbredir_disk.py). Not a client by itself.

  Channel(host, port, password, channel_type, channel_id=0, connection_id=0)
      links one channel: the REDQ link header and SpiceLinkMess, the server's
      SpiceLinkReply (its RSA public key), the ticket (password + NUL encrypted
      with RSA-OAEP(SHA-1)), then the u32 link result. No common capabilities are
      announced (so plain ticket authentication and full 18-byte data headers
      SpiceDataHeader <QHII: serial, type, size, sub_list) and no channel
      capabilities (so e.g. spicevmc never sends LZ4-compressed data).
      next_message() answers the housekeeping every channel gets (SET_ACK with
      ACK_SYNC, one ACK per window of messages, PING with PONG) and returns the rest.
  MainChannel(host, port, password)   the main channel (type 1, id 0).
  Session(host, port, password)
      links the main channel, waits for SPICE_MSG_MAIN_INIT (whose body starts
      with the u32 session id), then keeps answering the main channel's
      housekeeping from a daemon thread so the server does not drop the client;
      session.link(channel_type, channel_id) links a secondary channel with that
      session id as its connection_id (spice-server refuses a secondary link with
      an unknown connection id: SPICE_LINK_ERR_BAD_CONNECTION_ID).
  parse_uri(uri) -> (host, port, password) for what `hostvmm spice` prints
      (spice://HOST?port=N[&password=P]).

Protocol facts: spice-protocol's protocol.h (SpiceLinkHeader, SpiceLinkMess,
SpiceLinkReply, SpiceDataHeader) and enums.h (channel types, SPICE_MSG_SET_ACK=3,
SPICE_MSG_PING=4, SPICE_MSGC_ACK_SYNC=1, SPICE_MSGC_ACK=2, SPICE_MSGC_PONG=3,
SPICE_MSG_MAIN_INIT=103); spice-server's reds.cpp (reds_handle_other_links).
"""
import socket
import struct
import threading
import urllib.parse

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

MAGIC = b"REDQ"
CHANNEL_MAIN = 1
CHANNEL_USBREDIR = 9
MSG_SET_ACK, MSG_PING = 3, 4
MSGC_ACK_SYNC, MSGC_ACK, MSGC_PONG = 1, 2, 3
MSG_MAIN_INIT = 103


def recv_exact(sock, n):
    data = bytearray(n)
    view = memoryview(data)
    got = 0
    while got < n:
        part = sock.recv_into(view[got:], n - got)
        if not part:
            raise ConnectionError(f"server closed the connection ({got} of {n} bytes)")
        got += part
    return bytes(data)


def parse_uri(uri):
    """spice://HOST?port=N[&password=P] -> (host, port, password)."""
    parsed = urllib.parse.urlparse(uri)
    query = urllib.parse.parse_qs(parsed.query)
    host = parsed.hostname or "127.0.0.1"
    port = int(query.get("port", [parsed.port or 5900])[0])
    password = query.get("password", [""])[0]
    return host, port, password


class Channel:
    def __init__(self, host, port, password, channel_type, channel_id=0, connection_id=0, timeout=30):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        # As spice-gtk does for every channel: without it, Nagle holds a small message
        # (a CSW, an ACK) until the server acknowledges the previous one.
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.channel_type = channel_type
        self.serial = 0
        self.received = 0
        self.ack_window = 0
        self.send_lock = threading.Lock()
        # No common caps: no auth selection (plain ticket), full data headers.
        link = struct.pack("<IBBIII", connection_id, channel_type, channel_id, 0, 0, 18)
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
        with self.send_lock:
            self.serial += 1
            self.sock.sendall(struct.pack("<QHII", self.serial, msg_type, len(body), 0) + body)

    def receive(self):
        _serial, msg_type, size, _sub = struct.unpack("<QHII", recv_exact(self.sock, 18))
        return msg_type, recv_exact(self.sock, size)

    def next_message(self):
        """The next message the caller cares about; answers the housekeeping ones."""
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

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class MainChannel(Channel):
    def __init__(self, host, port, password, timeout=30):
        super().__init__(host, port, password, CHANNEL_MAIN, 0, 0, timeout)


class Session:
    """A main channel kept alive in the background, for linking secondary channels."""

    def __init__(self, host, port, password, timeout=30):
        self.host, self.port, self.password, self.timeout = host, port, password, timeout
        self.main = MainChannel(host, port, password, timeout)
        body = self.main.wait_for(lambda t, _b: t == MSG_MAIN_INIT, "MAIN_INIT")
        self.session_id = struct.unpack_from("<I", body, 0)[0]
        self.main_closed = threading.Event()
        self.main_error = None
        self.main.sock.settimeout(None)
        self.thread = threading.Thread(target=self._serve_main, name="spice-main", daemon=True)
        self.thread.start()

    def _serve_main(self):
        try:
            while True:
                self.main.next_message()  # housekeeping answered inside; the rest is ignored
        except (OSError, ConnectionError) as error:
            self.main_error = error
        finally:
            self.main_closed.set()

    def link(self, channel_type, channel_id=0):
        return Channel(self.host, self.port, self.password, channel_type, channel_id,
                       self.session_id, self.timeout)

    def close(self):
        self.main.close()
