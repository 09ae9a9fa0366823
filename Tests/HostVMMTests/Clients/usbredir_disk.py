#!/usr/bin/python3
"""A test USB device for the tests: a USB mass-storage disk (Bulk-Only Transport,
SCSI block commands) backed by an image file, speaking the usbredir protocol as
the usb-host side (the role libusbredirhost plays in spice-gtk, usbredirect and
usbredirserver) to a usb-guest such as QEMU's usb-redir device. The disk itself
(descriptors, SCSI) is usb_disk.py; the SPICE link, spice_link.py.

Usage:
  usbredir_disk.py --image FILE (--spice URI [--channel N] | --socket PATH)
                   [--vid 0x1d6b --pid 0x0104] [--speed full|high|super] [--serial TEXT]
                   [--drop-after-bytes N] [--garbage] [--hold SECONDS]

  --spice URI     spice://HOST?port=N[&password=P] (what `hostvmm spice` prints): links
                  the main channel, then the usbredir channel (SPICE_CHANNEL_USBREDIR=9)
                  id N (--channel, default 0) with the session id from MAIN_INIT; the
                  usbredir stream travels in SPICE_MSGC_SPICEVMC_DATA / SPICE_MSG_SPICEVMC_DATA
                  (both 101) messages. spice_link.py (next to this file) does the link.
  --socket PATH   a unix stream socket carrying the usbredir stream as is (QEMU
                  -chardev socket,id=u,path=PATH,server=on,wait=off).
  --vid/--pid     default 0x1d6b:0x0104 (Linux Foundation, "Multifunction Composite
                  Gadget", what Linux gadget tests use: clearly not real hardware).
  --speed         high (default: USB 2.0, 512-byte bulk packets), full (64) or super
                  (USB 3, 1024, with a BOS and SuperSpeed endpoint companions).
  --serial        iSerialNumber and VPD page 0x80 (default 000000000001; BOT 1.0 §4.1.1
                  wants at least 12 hexadecimal digits).
  --drop-after-bytes N  once N bytes of bulk-in payload (data phases and CSWs) have been
                  sent, close the transport abruptly (no device_disconnect), print
                  "dropped", exit 0.
  --garbage       after the hello exchange and device_connect, send a usbredir header of an
                  unknown type (0x7fff) declaring 0x7fffff00 bytes, then 4096 random bytes;
                  print "garbage-sent"; keep serving until the peer closes or --hold ends.
                  (Seen with QEMU 10.0.2: its usbredirparser reports "invalid usb-redir packet
                  type" and the next read aborts QEMU on hw/usb/redirect.c's
                  assert(dev->read_buf == NULL), over a socket chardev and over spicevmc.)
  --hold SECONDS  end cleanly (as on SIGTERM) after that long; default: until signalled.
Signals: SIGUSR1 unplugs (device_disconnect, the connection stays), SIGUSR2 plugs again
(interface_info, ep_info, device_connect), SIGTERM/SIGINT send device_disconnect, close
and exit 0.
Output, one line each, flushed: "linked" (transport up), "hello VERSION" (the peer's),
"connected VID:PID SPEED" (each device_connect sent), "configured N" (set_configuration
or a SET_CONFIGURATION control request), "unplugged", "plugged", "garbage-sent",
"dropped", "closed" (the peer closed the transport), "error: ..." (protocol surprises;
never fatal once linked), and at exit "stats cbw=N read-bytes=N write-bytes=N errors=N"
(read/write-bytes: image bytes read by READ commands / written by WRITE commands).
Exit status 0, or 1 when the transport cannot be set up.

Protocol facts and their sources (nothing here is copied from those projects):
- usbredir (spice/usbredir, usbredirproto.h and docs/usb-redirection-protocol.md, 0.7):
  little-endian packed structs. usb_redir_header {u32 type, u32 length, u32|u64 id}: the
  id is 64 bits only when both hellos announce usb_redir_cap_64bits_ids (5); the hello
  itself always has a 12-byte header. hello = char version[64] + u32 caps[]. Caps bits:
  bulk_streams 0, connect_device_version 1, filter 2, device_disconnect_ack 3,
  ep_info_max_packet_size 4, 64bits_ids 5, 32bits_bulk_length 6, bulk_receiving 7.
  Types: hello 0, device_connect 1, device_disconnect 2, reset 3, interface_info 4,
  ep_info 5, set_configuration 6, get_configuration 7, configuration_status 8,
  set_alt_setting 9, get_alt_setting 10, alt_setting_status 11, start/stop_iso_stream
  12/13, iso_stream_status 14, start/stop_interrupt_receiving 15/16,
  interrupt_receiving_status 17, alloc/free_bulk_streams 18/19, bulk_streams_status 20,
  cancel_data_packet 21, filter_reject 22, filter_filter 23, device_disconnect_ack 24,
  start/stop_bulk_receiving 25/26, bulk_receiving_status 27; control_packet 100,
  bulk_packet 101, iso_packet 102, interrupt_packet 103, buffered_bulk_packet 104.
  Status: success 0, cancelled 1, inval 2, ioerror 3, stall 4, timeout 5, babble 6.
  Speed: low 0, full 1, high 2, super 3. Endpoint types: control 0, iso 1, bulk 2,
  interrupt 3, invalid 255. device_connect {u8 speed, class, subclass, protocol; u16 vid,
  pid[, u16 bcdDevice with connect_device_version]}. interface_info {u32 count;
  u8 interface[32], class[32], subclass[32], protocol[32]}. ep_info {u8 type[32],
  interval[32], interface[32][, u16 max_packet_size[32] with ep_info_max_packet_size]
  [, u32 max_streams[32] with bulk_streams]}, index 0-15 = OUT eps 0-15, 16-31 = IN.
  control_packet {u8 endpoint, request, requesttype, status; u16 value, index, length}
  + data (OUT: guest to host; IN: in the host's answer, length = actual). bulk_packet
  {u8 endpoint, status; u16 length; u32 stream_id[; u16 length_high with
  32bits_bulk_length on both sides]} + data likewise. configuration_status {u8 status,
  configuration}, alt_setting_status {u8 status, interface, alt}. After a successful
  set_configuration / set_alt_setting the host sends ep_info and interface_info before the
  status; a device_connect follows interface_info and ep_info. cancel_data_packet carries
  the id of the packet to cancel, which is answered with status cancelled if still pending.
- QEMU's usb-guest (hw/usb/redirect.c): answers SET_ADDRESS itself, turns
  SET_CONFIGURATION / GET_CONFIGURATION / SET_INTERFACE / GET_INTERFACE into
  set_configuration / get_configuration / set_alt_setting / get_alt_setting; everything
  else on ep0 arrives as control_packet; it rejects a device on an xHCI port unless the
  host has ep_info_max_packet_size, 32bits_bulk_length and 64bits_ids; with
  32bits_bulk_length it pipelines bulk-in and combines the guest's packets into one large
  request; it does not announce device_disconnect_ack.
- USB Mass Storage Class Bulk-Only Transport 1.0: interface class 8, subclass 6 (SCSI
  transparent), protocol 0x50; Get Max LUN (0xA1, 0xFE) returns one byte; Bulk-Only Mass
  Storage Reset (0x21, 0xFF). CBW 31 bytes <IIIBBB16s: 'USBC' 0x43425355, tag, data
  transfer length, flags (0x80 = data-in), LUN, CB length, CB. CSW 13 bytes <IIIB: 'USBS'
  0x53425355, the CBW's tag, residue, status (0 passed, 1 failed, 2 phase error). The
  thirteen cases of §6.7: less data than the host expects ends the data-in phase with a
  short (or zero-length) packet; residue = expected - processed.
- USB 2.0 ch. 9 / USB 3.x ch. 9: standard requests and descriptors (device 18 bytes,
  configuration 9, interface 9, endpoint 7, SuperSpeed endpoint companion 6, device
  qualifier 10, BOS 5 + USB 2.0 extension 7 + SuperSpeed device capability 10).
- SPC-4 / SBC-3: INQUIRY (standard 36 bytes, VPD 0x00 and 0x80), REQUEST SENSE (fixed
  format 0x70, 18 bytes), MODE SENSE(6)/(10) (pages 0x08 caching, 0x1C informational
  exceptions, 0x3F all), READ CAPACITY(10)/(16), READ/WRITE(10)/(16), VERIFY(10),
  SYNCHRONIZE CACHE(10)/(16), TEST UNIT READY, START STOP UNIT, PREVENT ALLOW MEDIUM
  REMOVAL; an unknown operation code is CHECK CONDITION with ILLEGAL REQUEST / INVALID
  COMMAND OPERATION CODE (05h/20h/00h).
"""
import argparse
import collections
import os
import select
import signal
import socket
import struct
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ next to the sources
from usb_disk import BLOCK, EP_IN, EP_OUT, ILLEGAL_REQUEST, MEDIUM_ERROR, Descriptors, Disk, ScsiError  # noqa: E402

# usbredir packet types
HELLO, DEVICE_CONNECT, DEVICE_DISCONNECT, RESET, INTERFACE_INFO, EP_INFO = 0, 1, 2, 3, 4, 5
SET_CONFIGURATION, GET_CONFIGURATION, CONFIGURATION_STATUS = 6, 7, 8
SET_ALT_SETTING, GET_ALT_SETTING, ALT_SETTING_STATUS = 9, 10, 11
START_ISO_STREAM, STOP_ISO_STREAM, ISO_STREAM_STATUS = 12, 13, 14
START_INTERRUPT_RECEIVING, STOP_INTERRUPT_RECEIVING, INTERRUPT_RECEIVING_STATUS = 15, 16, 17
ALLOC_BULK_STREAMS, FREE_BULK_STREAMS, BULK_STREAMS_STATUS = 18, 19, 20
CANCEL_DATA_PACKET, FILTER_REJECT, FILTER_FILTER, DEVICE_DISCONNECT_ACK = 21, 22, 23, 24
START_BULK_RECEIVING, STOP_BULK_RECEIVING, BULK_RECEIVING_STATUS = 25, 26, 27
CONTROL_PACKET, BULK_PACKET, ISO_PACKET, INTERRUPT_PACKET, BUFFERED_BULK_PACKET = 100, 101, 102, 103, 104
TYPE_NAMES = {
    SET_CONFIGURATION: "set_configuration", GET_CONFIGURATION: "get_configuration",
    START_ISO_STREAM: "start_iso_stream", STOP_ISO_STREAM: "stop_iso_stream",
    START_INTERRUPT_RECEIVING: "start_interrupt_receiving", STOP_INTERRUPT_RECEIVING: "stop_interrupt_receiving",
    ALLOC_BULK_STREAMS: "alloc_bulk_streams", FREE_BULK_STREAMS: "free_bulk_streams",
    START_BULK_RECEIVING: "start_bulk_receiving", STOP_BULK_RECEIVING: "stop_bulk_receiving",
    HELLO: "hello", DEVICE_CONNECT: "device_connect", DEVICE_DISCONNECT: "device_disconnect",
    INTERFACE_INFO: "interface_info", EP_INFO: "ep_info", ISO_PACKET: "iso_packet",
    INTERRUPT_PACKET: "interrupt_packet", BUFFERED_BULK_PACKET: "buffered_bulk_packet",
}
# statuses
SUCCESS, CANCELLED, INVAL, IOERROR, STALL, TIMEOUT, BABBLE = 0, 1, 2, 3, 4, 5, 6
# capabilities
CAP_BULK_STREAMS, CAP_CONNECT_DEVICE_VERSION, CAP_FILTER, CAP_DEVICE_DISCONNECT_ACK = 0, 1, 2, 3
CAP_EP_INFO_MAX_PACKET_SIZE, CAP_64BITS_IDS, CAP_32BITS_BULK_LENGTH, CAP_BULK_RECEIVING = 4, 5, 6, 7
OUR_CAPS = ((1 << CAP_CONNECT_DEVICE_VERSION) | (1 << CAP_FILTER) | (1 << CAP_DEVICE_DISCONNECT_ACK)
            | (1 << CAP_EP_INFO_MAX_PACKET_SIZE) | (1 << CAP_64BITS_IDS) | (1 << CAP_32BITS_BULK_LENGTH))
VERSION = b"hostvmm usbredir_disk.py 1"

SPEEDS = {"full": 1, "high": 2, "super": 3}
SPICEVMC_DATA = 101
SPICE_CHUNK = 64 * 1024

CSW_PASSED, CSW_FAILED, CSW_PHASE_ERROR = 0, 1, 2


def say(text):
    print(text, flush=True)


# ---------------------------------------------------------------- transports

class SocketTransport:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)

    def fileno(self):
        return self.sock.fileno()

    def recv(self):
        """Bytes read (b"" when the peer closed)."""
        return self.sock.recv(1 << 20)

    def send(self, data):
        self.sock.sendall(data)

    def abort(self):
        # Abrupt: RST instead of FIN would need SO_LINGER; for a unix socket a close is it.
        self.sock.close()

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class SpiceTransport:
    def __init__(self, uri, channel_id):
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import spice_link
        self.link = spice_link
        host, port, password = spice_link.parse_uri(uri)
        self.session = spice_link.Session(host, port, password)
        self.channel = self.session.link(spice_link.CHANNEL_USBREDIR, channel_id)
        self.channel.sock.settimeout(None)

    def fileno(self):
        return self.channel.sock.fileno()

    def recv(self):
        try:
            msg_type, body = self.channel.next_message()
        except ConnectionError:
            return b""
        if msg_type == SPICEVMC_DATA:
            return body
        say(f"error: unexpected SPICE message {msg_type} ({len(body)} bytes) on the usbredir channel")
        return None  # nothing for the usbredir stream, but not closed

    def send(self, data):
        view = memoryview(data)
        for offset in range(0, len(view), SPICE_CHUNK):
            self.channel.send(SPICEVMC_DATA, bytes(view[offset:offset + SPICE_CHUNK]))

    def abort(self):
        self.channel.sock.close()
        self.session.main.sock.close()

    def close(self):
        self.channel.close()
        self.session.close()


# ---------------------------------------------------------------- the usbredir device

class Device:
    def __init__(self, transport, disk, args):
        self.t = transport
        self.disk = disk
        self.args = args
        self.speed = SPEEDS[args.speed]
        self.desc = Descriptors(args.vid, args.pid, self.speed, args.serial)
        self.inbuf = bytearray()
        self.peer_caps = None
        self.id_size = 4  # until both hellos are known
        self.bulk_high = False
        self.plugged = False
        self.awaiting_ack = False
        self.plug_when_acked = False
        self.configuration = 0
        self.sent_in_bytes = 0
        self.cbws = 0
        self.errors = 0
        self.pending_in = collections.deque()  # (id, stream, length) of bulk-in requests not answered
        self.halted = set()
        self.needs_reset = False
        self.in_sizes = collections.Counter()
        self.out_sizes = collections.Counter()
        self.reset_bot()
        self.quit = False
        self.dropped = False

    def error(self, text):
        self.errors += 1
        say(f"error: {text}")

    def has(self, cap):
        return self.peer_caps is not None and bool(self.peer_caps & (1 << cap)) and bool(OUR_CAPS & (1 << cap))

    # ------------------------------------------------------------ output

    def send_packet(self, ptype, packet_id, body):
        id_format = "<IIQ" if self.id_size == 8 else "<III"
        self.t.send(struct.pack(id_format, ptype, len(body), packet_id) + body)

    def send_hello(self):
        self.t.send(struct.pack("<III", HELLO, 64 + 4, 0) + VERSION.ljust(64, b"\0") + struct.pack("<I", OUR_CAPS))

    def send_interface_and_ep_info(self):
        def row(values):
            return bytes(values) + bytes(32 - len(values))
        self.send_packet(INTERFACE_INFO, 0, struct.pack("<I", 1) + row([0]) + row([0x08]) + row([0x06]) + row([0x50]))
        types, mps = [255] * 32, [0] * 32
        types[0] = types[16] = 0  # ep0 both directions: control
        mps[0] = mps[16] = self.desc.ep0_mps
        for address in (EP_IN, EP_OUT):
            index = ((address & 0x80) >> 3) | (address & 0x0F)
            types[index], mps[index] = 2, self.desc.bulk_mps
        body = bytes(types) + bytes(32) + bytes(32)  # interval 0, interface 0
        if self.has(CAP_EP_INFO_MAX_PACKET_SIZE):
            body += struct.pack("<32H", *mps)
        self.send_packet(EP_INFO, 0, body)

    def plug(self):
        self.configuration = 0
        self.halted.clear()
        self.needs_reset = False
        self.pending_in.clear()
        self.reset_bot()
        self.send_interface_and_ep_info()
        body = struct.pack("<BBBBHH", self.speed, 0, 0, 0, self.args.vid, self.args.pid)
        if self.has(CAP_CONNECT_DEVICE_VERSION):
            body += struct.pack("<H", self.desc.bcd_device)
        self.send_packet(DEVICE_CONNECT, 0, body)
        self.plugged = True
        say(f"connected {self.args.vid:04x}:{self.args.pid:04x} {self.args.speed}")

    def unplug(self):
        if not self.plugged:
            return
        self.plugged = False
        self.send_packet(DEVICE_DISCONNECT, 0, b"")
        self.awaiting_ack = self.has(CAP_DEVICE_DISCONNECT_ACK)
        self.pending_in.clear()

    def send_garbage(self):
        self.t.send(struct.pack("<III", 0x7FFF, 0x7FFFFF00, 0) + os.urandom(4096))
        say("garbage-sent")

    # ------------------------------------------------------------ input

    def feed(self, data):
        self.inbuf += data
        view = memoryview(self.inbuf)
        pos = 0
        try:
            while not self.quit:
                header = 12 if self.peer_caps is None else 8 + self.id_size
                if len(view) - pos < header:
                    break
                if self.id_size == 8 and self.peer_caps is not None:
                    ptype, length, packet_id = struct.unpack_from("<IIQ", view, pos)
                else:
                    ptype, length, packet_id = struct.unpack_from("<III", view, pos)
                if length > (1 << 28):
                    self.error(f"absurd packet length {length} (type {ptype}); closing")
                    self.quit = True
                    break
                if len(view) - pos < header + length:
                    break
                body = bytes(view[pos + header:pos + header + length])
                pos += header + length
                self.handle(ptype, packet_id, body)
        finally:
            view.release()
            del self.inbuf[:pos]

    def handle(self, ptype, packet_id, body):
        if self.peer_caps is None:
            if ptype != HELLO or len(body) < 64:
                self.error(f"first packet is type {ptype}, not a hello")
                return
            version = bytes(body[:64]).split(b"\0", 1)[0].decode("utf-8", "replace")
            caps = bytes(body[64:]) + bytes(4)
            self.peer_caps = struct.unpack_from("<I", caps, 0)[0]
            self.id_size = 8 if self.has(CAP_64BITS_IDS) else 4
            self.bulk_high = self.has(CAP_32BITS_BULK_LENGTH)
            say(f"hello {version}")
            self.plug()
            if self.args.garbage:
                self.send_garbage()
            return
        if ptype == BULK_PACKET:
            self.bulk_packet(packet_id, body)
        elif ptype == CONTROL_PACKET:
            self.control_packet(packet_id, body)
        elif ptype == SET_CONFIGURATION:
            self.set_configuration(packet_id, body[0] if len(body) else 0)
        elif ptype == GET_CONFIGURATION:
            self.send_packet(CONFIGURATION_STATUS, packet_id, bytes([SUCCESS if self.plugged else IOERROR,
                                                                     self.configuration]))
        elif ptype == SET_ALT_SETTING:
            interface, alt = (body[0], body[1]) if len(body) >= 2 else (0, 0)
            if self.plugged and interface == 0 and alt == 0:
                self.reset_bot()
                self.halted.clear()
                self.send_interface_and_ep_info()
                status = SUCCESS
            else:
                status = STALL if self.plugged else IOERROR
            self.send_packet(ALT_SETTING_STATUS, packet_id, bytes([status, interface, alt]))
        elif ptype == GET_ALT_SETTING:
            interface = body[0] if len(body) else 0
            status = SUCCESS if self.plugged and interface == 0 else (STALL if self.plugged else IOERROR)
            self.send_packet(ALT_SETTING_STATUS, packet_id, bytes([status, interface, 0]))
        elif ptype == RESET:
            # A port reset: the device keeps its configuration (as libusb_reset_device restores
            # it); the Bulk-Only state starts over.
            self.reset_bot()
            self.halted.clear()
            self.needs_reset = False
            self.pending_in.clear()
        elif ptype == CANCEL_DATA_PACKET:
            self.cancel(packet_id)
        elif ptype == DEVICE_DISCONNECT_ACK:
            self.awaiting_ack = False
            if self.plug_when_acked:
                self.plug_when_acked = False
                self.plug()
                say("plugged")
        elif ptype == FILTER_FILTER:
            rules = bytes(body).rstrip(b"\0").decode("ascii", "replace")
            say(f"filter {rules}")
        elif ptype == FILTER_REJECT:
            self.error("the peer's filter rejected the device")
        elif ptype == START_INTERRUPT_RECEIVING or ptype == STOP_INTERRUPT_RECEIVING:
            self.send_packet(INTERRUPT_RECEIVING_STATUS, packet_id, bytes([INVAL, body[0] if len(body) else 0]))
        elif ptype == START_ISO_STREAM or ptype == STOP_ISO_STREAM:
            self.send_packet(ISO_STREAM_STATUS, packet_id, bytes([INVAL, body[0] if len(body) else 0]))
        elif ptype == START_BULK_RECEIVING or ptype == STOP_BULK_RECEIVING:
            # Only sent to hosts with bulk_receiving, which we do not announce.
            self.error(f"{TYPE_NAMES.get(ptype, ptype)} without the bulk_receiving capability")
        elif ptype in (ALLOC_BULK_STREAMS, FREE_BULK_STREAMS):
            endpoints = struct.unpack_from("<I", bytes(body[:4]) + bytes(4))[0]
            self.send_packet(BULK_STREAMS_STATUS, packet_id, struct.pack("<IIB", endpoints, 0, INVAL))
        else:
            self.error(f"unexpected packet {TYPE_NAMES.get(ptype, ptype)} ({len(body)} bytes)")

    def set_configuration(self, packet_id, value):
        if not self.plugged:
            self.send_packet(CONFIGURATION_STATUS, packet_id, bytes([IOERROR, self.configuration]))
            return
        if value not in (0, 1):
            self.send_packet(CONFIGURATION_STATUS, packet_id, bytes([STALL, self.configuration]))
            return
        self.configuration = value
        self.reset_bot()
        self.halted.clear()
        self.pending_in.clear()
        self.send_interface_and_ep_info()
        self.send_packet(CONFIGURATION_STATUS, packet_id, bytes([SUCCESS, value]))
        say(f"configured {value}")

    def cancel(self, packet_id):
        for request in list(self.pending_in):
            if request[0] == packet_id:
                self.pending_in.remove(request)
                self.send_bulk(packet_id, EP_IN, request[1], CANCELLED, b"")
                return
        # Already answered: the peer matches the answer it got against its cancel.

    # ------------------------------------------------------------ control transfers

    def control_packet(self, packet_id, body):
        if len(body) < 10:
            self.error("short control packet")
            return
        endpoint, request, rtype, _status, value, index, length = struct.unpack_from("<BBBBHHH", body, 0)
        data_out = bytes(body[10:])
        if not self.plugged:
            self.reply_control(packet_id, body, IOERROR, b"")
            return
        result = self.standard_or_class(request, rtype, value, index, length, data_out)
        if result is None:
            self.reply_control(packet_id, body, STALL, b"")
        elif rtype & 0x80:
            self.reply_control(packet_id, body, SUCCESS, result[:length])
        else:
            self.reply_control(packet_id, body, SUCCESS, b"", out_length=len(data_out))

    def reply_control(self, packet_id, request_header, status, data, out_length=0):
        endpoint, request, rtype, _s, value, index, _length = struct.unpack_from("<BBBBHHH", request_header, 0)
        length = len(data) if rtype & 0x80 else (out_length if status == SUCCESS else 0)
        self.send_packet(CONTROL_PACKET, packet_id,
                         struct.pack("<BBBBHHH", endpoint, request, rtype, status, value, index, length) + data)

    def standard_or_class(self, request, rtype, value, index, length, data_out):
        """Returns data (IN), b"" (OUT accepted) or None (stall)."""
        kind, recipient = (rtype >> 5) & 3, rtype & 0x1F
        if kind == 0:  # standard
            if request == 6 and rtype == 0x80:  # GET_DESCRIPTOR
                return self.desc.get(value >> 8, value & 0xFF, index)
            if request == 0:  # GET_STATUS
                if recipient == 2:
                    return struct.pack("<H", 1 if (index & 0xFF) in self.halted else 0)
                return struct.pack("<H", 0)
            if request in (1, 3):  # CLEAR_FEATURE / SET_FEATURE
                if recipient == 2 and value == 0:  # ENDPOINT_HALT
                    endpoint = index & 0xFF
                    if request == 1:
                        self.halted.discard(endpoint)
                        if not self.needs_reset:
                            self.service_in()
                    else:
                        self.halted.add(endpoint)
                return b""
            if request == 9 and rtype == 0x00:  # SET_CONFIGURATION (QEMU sends set_configuration)
                if value & 0xFF not in (0, 1):
                    return None
                self.configuration = value & 0xFF
                say(f"configured {self.configuration}")
                return b""
            if request == 8 and rtype == 0x80:  # GET_CONFIGURATION
                return bytes([self.configuration])
            if request == 11 and rtype == 0x01:  # SET_INTERFACE
                return b"" if (index, value) == (0, 0) else None
            if request == 10 and rtype == 0x81:  # GET_INTERFACE
                return bytes([0]) if index == 0 else None
            if request in (5, 0x30, 0x31):  # SET_ADDRESS, SET_SEL, SET_ISOCH_DELAY
                return b""
            return None
        if kind == 1 and recipient == 1 and (index & 0xFF) == 0:  # class, interface 0
            if request == 0xFE and rtype == 0xA1:  # Get Max LUN
                return bytes([0])
            if request == 0xFF and rtype == 0x21:  # Bulk-Only Mass Storage Reset
                self.reset_bot()
                self.needs_reset = False
                self.pending_in.clear()
                return b""
        return None

    # ------------------------------------------------------------ Bulk-Only Transport

    def reset_bot(self):
        self.phase = "cbw"
        self.tag = 0
        self.host_length = 0
        self.processed = 0
        self.csw_status = CSW_PASSED
        self.in_data = b""
        self.in_pos = 0
        self.out_want = 0
        self.out_parts = []
        self.out_got = 0
        self.out_action = None

    def send_bulk(self, packet_id, endpoint, stream, status, data):
        n = len(data)
        header = struct.pack("<BBHI", endpoint, status, n & 0xFFFF, stream)
        if self.bulk_high:
            header += struct.pack("<H", n >> 16)
        self.send_packet(BULK_PACKET, packet_id, header + data)
        if endpoint & 0x80 and n:
            self.sent_in_bytes += n
            if self.args.drop_after_bytes is not None and self.sent_in_bytes >= self.args.drop_after_bytes:
                self.t.abort()
                self.dropped = True
                self.quit = True
                say("dropped")
                raise DroppedError()

    def bulk_packet(self, packet_id, body):
        header = 10 if self.bulk_high else 8
        if len(body) < header:
            self.error("short bulk packet")
            return
        endpoint, _status, length, stream = struct.unpack_from("<BBHI", body, 0)
        if self.bulk_high:
            length |= struct.unpack_from("<H", body, 8)[0] << 16
        data = body[header:]
        if not self.plugged:
            self.send_bulk(packet_id, endpoint, stream, IOERROR, b"")
            return
        if endpoint == EP_IN:
            self.in_sizes[length] += 1
            if EP_IN in self.halted or self.needs_reset:
                self.send_bulk(packet_id, endpoint, stream, STALL, b"")
                return
            self.pending_in.append((packet_id, stream, length))
            self.service_in()
        elif endpoint == EP_OUT:
            self.out_sizes[len(data)] += 1
            if EP_OUT in self.halted or self.needs_reset:
                self.send_bulk(packet_id, endpoint, stream, STALL, b"")
                return
            self.bulk_out(data)
            self.ack_out(packet_id, stream, len(data))
            self.service_in()
        else:
            self.error(f"bulk packet for endpoint {endpoint:02x}")
            self.send_bulk(packet_id, endpoint, stream, STALL, b"")

    def ack_out(self, packet_id, stream, n):
        header = struct.pack("<BBHI", EP_OUT, SUCCESS, n & 0xFFFF, stream)
        if self.bulk_high:
            header += struct.pack("<H", n >> 16)
        self.send_packet(BULK_PACKET, packet_id, header)

    def bulk_out(self, data):
        if self.phase == "data_out":
            room = self.out_want - self.out_got
            take = data[:room]
            if self.out_action is not None:
                self.out_parts.append(bytes(take))
            self.out_got += len(take)
            if len(data) > room:
                self.error(f"{len(data) - room} bytes of data-out beyond the CBW's length")
            if self.out_got >= self.out_want:
                self.finish_out()
            return
        if self.phase != "cbw":
            self.error(f"CBW-phase data while in phase {self.phase}; starting over")
            self.reset_bot()
        if len(data) != 31 or bytes(data[:4]) != b"USBC":
            # BOT §6.6.1: an invalid CBW stalls both bulk endpoints until a Reset Recovery.
            self.error(f"invalid CBW ({len(data)} bytes)")
            self.needs_reset = True
            self.halted.update((EP_IN, EP_OUT))
            return
        self.cbw(bytes(data))

    def cbw(self, data):
        _sig, self.tag, self.host_length, flags, lun, cb_length, cb = struct.unpack("<IIIBBB16s", data)
        self.cbws += 1
        host_in = bool(flags & 0x80)
        cdb = cb[:max(cb_length, 6)] + bytes(16)
        self.processed = 0
        self.csw_status = CSW_PASSED
        try:
            if lun != 0:
                raise ScsiError(ILLEGAL_REQUEST, 0x25)  # LOGICAL UNIT NOT SUPPORTED
            kind, payload = self.disk.command(cdb, self.host_length, host_in)
        except ScsiError as error:
            self.disk.sense = error.sense
            kind, payload = "none", None
            self.csw_status = CSW_FAILED
        except OSError as error:
            self.error(f"image I/O: {error}")
            self.disk.sense = (MEDIUM_ERROR, 0x11, 0)  # UNRECOVERED READ ERROR
            kind, payload = "none", None
            self.csw_status = CSW_FAILED

        if kind == "read":
            lba, count = payload
            want = count * BLOCK
            if not host_in and self.host_length:
                return self.phase_error_out()
            # Hi < Di: send what the host takes, then a phase error (BOT §6.7.2 case 7).
            length = min(want, self.host_length)
            try:
                data = os.pread(self.disk.fd, length, lba * BLOCK)
            except OSError as error:
                self.error(f"image read: {error}")
                data = b""
                self.disk.sense = (MEDIUM_ERROR, 0x11, 0)
                self.csw_status = CSW_FAILED
            self.disk.read_bytes += len(data)
            if want > self.host_length:
                self.csw_status = CSW_PHASE_ERROR
            return self.start_in(data)
        if kind == "in":
            if self.host_length == 0:
                self.csw_status = CSW_PHASE_ERROR if payload else self.csw_status
                return self.start_csw()
            if not host_in:
                return self.phase_error_out()
            return self.start_in(payload[:self.host_length])
        if kind in ("write", "discard"):
            want = payload[1] * BLOCK if kind == "write" else payload
            if want and (host_in or self.host_length == 0):
                self.csw_status = CSW_PHASE_ERROR
                return self.start_in(b"") if host_in and self.host_length else self.start_csw()
            if self.host_length < want:
                self.csw_status = CSW_PHASE_ERROR
            return self.start_out(payload if kind == "write" else None, min(want, self.host_length))
        # no data
        if self.host_length == 0:
            return self.start_csw()
        if host_in:
            return self.start_in(b"")  # Hi > Dn: a zero-length packet ends the data phase
        return self.start_out(None, 0)  # Ho > Dn: the host's data is taken and dropped

    def phase_error_out(self):
        self.csw_status = CSW_PHASE_ERROR
        return self.start_out(None, 0)

    def start_in(self, data):
        self.phase = "data_in"
        self.in_data = data
        self.in_pos = 0

    def start_out(self, write, useful):
        """Data-out phase of host_length bytes; the first `useful` go to `write` (lba, count)."""
        self.phase = "data_out"
        self.out_want = self.host_length
        self.out_useful = useful
        self.out_action = write
        self.out_parts = []
        self.out_got = 0
        if self.out_want == 0:
            self.finish_out()

    def finish_out(self):
        if self.out_action is not None:
            lba, _count = self.out_action
            data = b"".join(self.out_parts)[:self.out_useful]
            usable = len(data) - len(data) % BLOCK
            try:
                written = os.pwrite(self.disk.fd, data[:usable], lba * BLOCK) if usable else 0
            except OSError as error:
                self.error(f"image write: {error}")
                written = 0
                self.disk.sense = (MEDIUM_ERROR, 0x0C, 0)  # WRITE ERROR
                self.csw_status = CSW_FAILED
            self.disk.write_bytes += written
            self.processed = written
        self.out_parts = []
        self.start_csw()

    def start_csw(self):
        self.phase = "csw"

    def csw(self):
        residue = self.host_length - self.processed
        if self.csw_status == CSW_PHASE_ERROR:
            residue = 0 if residue < 0 else residue
        return struct.pack("<IIIB", 0x53425355, self.tag, max(residue, 0), self.csw_status)

    def service_in(self):
        while self.pending_in and not self.quit:
            packet_id, stream, length = self.pending_in[0]
            if self.phase == "data_in":
                self.pending_in.popleft()
                remaining = len(self.in_data) - self.in_pos
                n = min(length, remaining)
                chunk = self.in_data[self.in_pos:self.in_pos + n]
                self.in_pos += n
                self.processed += n
                if self.in_pos >= len(self.in_data):
                    # All data sent: a short packet ended the phase, or the host has all it wanted,
                    # else the next request gets a zero-length packet ("data_end").
                    if n < length or self.processed >= self.host_length:
                        self.in_data = b""
                        self.start_csw()
                    else:
                        self.phase = "data_end"
                self.send_bulk(packet_id, EP_IN, stream, SUCCESS, chunk)
            elif self.phase == "data_end":
                self.pending_in.popleft()
                self.start_csw()
                self.send_bulk(packet_id, EP_IN, stream, SUCCESS, b"")
            elif self.phase == "csw":
                self.pending_in.popleft()
                status = SUCCESS
                csw = self.csw()
                if length < len(csw):
                    self.error(f"bulk-in request of {length} bytes for the CSW")
                    csw, status = csw[:length], BABBLE
                self.reset_bot()
                self.send_bulk(packet_id, EP_IN, stream, status, csw)
            else:
                return  # nothing to send yet: the request waits (a real device NAKs)


class DroppedError(Exception):
    pass


# ---------------------------------------------------------------- main

def number(text):
    return int(text, 0)


def main():
    parser = argparse.ArgumentParser(description="usbredir test USB disk (usb-host side)")
    parser.add_argument("--image", required=True)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--spice", metavar="URI")
    where.add_argument("--socket", metavar="PATH")
    parser.add_argument("--channel", type=int, default=0)
    parser.add_argument("--vid", type=number, default=0x1D6B)
    parser.add_argument("--pid", type=number, default=0x0104)
    parser.add_argument("--speed", choices=sorted(SPEEDS), default="high")
    parser.add_argument("--serial", default="000000000001")
    parser.add_argument("--drop-after-bytes", type=int, default=None)
    parser.add_argument("--garbage", action="store_true")
    parser.add_argument("--hold", type=float, default=None)
    args = parser.parse_args()

    try:
        disk = Disk(args.image, args.serial)
    except OSError as error:
        say(f"error: image: {error}")
        return 1

    signals = []
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    os.set_blocking(wake_r, False)

    def on_signal(signum, _frame):
        signals.append(signum)

    for signum in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)

    try:
        transport = SpiceTransport(args.spice, args.channel) if args.spice else SocketTransport(args.socket)
    except (OSError, ConnectionError) as error:
        say(f"error: cannot connect: {error}")
        return 1
    say("linked")
    device = Device(transport, disk, args)
    deadline = time.monotonic() + args.hold if args.hold is not None else None
    closed = False
    try:
        device.send_hello()
        while not device.quit:
            while signals:
                signum = signals.pop(0)
                if signum == signal.SIGUSR1:
                    if device.plugged:
                        device.unplug()
                        say("unplugged")
                elif signum == signal.SIGUSR2:
                    if device.peer_caps is None or device.plugged:
                        pass
                    elif device.awaiting_ack:
                        device.plug_when_acked = True
                    else:
                        device.plug()
                        say("plugged")
                else:
                    device.quit = True
            if device.quit:
                break
            timeout = None
            if deadline is not None:
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    break
            try:
                ready, _w, _x = select.select([transport, wake_r], [], [], timeout)
            except InterruptedError:
                continue
            if wake_r in ready:
                try:
                    os.read(wake_r, 512)
                except BlockingIOError:
                    pass
            if transport in ready:
                data = transport.recv()
                if data is None:
                    continue
                if not data:
                    closed = True
                    say("closed")
                    break
                device.feed(data)
    except DroppedError:
        pass
    except (OSError, ConnectionError) as error:
        if not device.dropped:
            say(f"error: transport: {error}")
            device.errors += 1
            closed = True
    if not device.dropped:
        if not closed:
            try:
                if device.plugged:
                    device.unplug()
                transport.close()
            except (OSError, ConnectionError) as error:
                say(f"error: closing: {error}")
        else:
            try:
                transport.close()
            except OSError:
                pass
    if os.environ.get("USBREDIR_DISK_TRACE"):
        ops = " ".join(f"{op:02x}:{n}" for op, n in sorted(device.disk.opcodes.items()))
        say(f"trace opcodes {ops}")
        say(f"trace bulk-in-requests {dict(sorted(device.in_sizes.items()))}")
        say(f"trace bulk-out-packets {dict(sorted(device.out_sizes.items()))}")
    say(f"stats cbw={device.cbws} read-bytes={disk.read_bytes} write-bytes={disk.write_bytes} errors={device.errors}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
