"""The USB mass-storage disk behind usbredir_disk.py: its descriptors (device,
configuration with one bulk-in and one bulk-out endpoint, strings, BOS and SuperSpeed
companions at super speed) and the SCSI block device (SPC-4/SBC-3 commands Linux sends
over Bulk-Only Transport) backed by an image file. No I/O besides the image.
Facts: USB 2.0 §9.6 and USB 3.2 §9.6 (descriptor layouts); USB Mass Storage Class
Bulk-Only Transport 1.0; SPC-4, SBC-3 (command and sense layouts).
"""
import collections
import os
import struct

EP_IN, EP_OUT = 0x81, 0x02
BLOCK = 512
# SCSI
GOOD, CHECK_CONDITION = 0, 2
NO_SENSE, NOT_READY, MEDIUM_ERROR, ILLEGAL_REQUEST = 0, 2, 3, 5


# ---------------------------------------------------------------- descriptors

def string_descriptor(text):
    data = text.encode("utf-16-le")
    return bytes([2 + len(data), 3]) + data


class Descriptors:
    def __init__(self, vid, pid, speed, serial):
        self.speed = speed
        super_speed = speed == 3
        self.bulk_mps = {1: 64, 2: 512, 3: 1024}[speed]
        self.ep0_mps = 512 if super_speed else 64
        bcd_usb = 0x0300 if super_speed else 0x0200
        self.bcd_device = 0x0100
        self.device = struct.pack("<BBHBBBBHHHBBBB", 18, 1, bcd_usb, 0, 0, 0,
                                  9 if super_speed else 64, vid, pid, self.bcd_device, 1, 2, 3, 1)
        self.config = self._config(2, self.bulk_mps, super_speed)
        # A high-speed device also describes itself at full speed (USB 2.0 §9.6.2, §9.6.4).
        self.qualifier = struct.pack("<BBHBBBBBB", 10, 6, 0x0200, 0, 0, 0, 64, 1, 0) if speed == 2 else None
        self.other_speed = self._config(7, 64, False) if speed == 2 else None
        self.bos = None
        if super_speed:
            usb2_ext = struct.pack("<BBBI", 7, 0x10, 0x02, 0x00000002)  # LPM supported
            ss_cap = struct.pack("<BBBBHBBH", 10, 0x10, 0x03, 0, 0x000E, 1, 0x0A, 0x07FF)
            self.bos = struct.pack("<BBHB", 5, 0x0F, 5 + len(usb2_ext) + len(ss_cap), 2) + usb2_ext + ss_cap
        self.strings = {1: "hostvmm", 2: "usbredir test disk", 3: serial}

    @staticmethod
    def _config(descriptor_type, mps, super_speed):
        interface = struct.pack("<BBBBBBBBB", 9, 4, 0, 0, 2, 0x08, 0x06, 0x50, 0)
        endpoints = b""
        for address in (EP_IN, EP_OUT):
            endpoints += struct.pack("<BBBBHB", 7, 5, address, 2, mps, 0)
            if super_speed:
                endpoints += struct.pack("<BBBBH", 6, 0x30, 0, 0, 0)  # no burst, no streams
        body = interface + endpoints
        max_power = 12 if super_speed else 50  # 96 mA (8 mA units) / 100 mA (2 mA units)
        return struct.pack("<BBHBBBBB", 9, descriptor_type, 9 + len(body), 1, 1, 0, 0x80, max_power) + body

    def get(self, descriptor_type, index, language):
        if descriptor_type == 1:
            return self.device
        if descriptor_type == 2 and index == 0:
            return self.config
        if descriptor_type == 3:
            if index == 0:
                return bytes([4, 3]) + struct.pack("<H", 0x0409)
            if index in self.strings:
                return string_descriptor(self.strings[index])
            return None
        if descriptor_type == 6:
            return self.qualifier
        if descriptor_type == 7 and index == 0:
            return self.other_speed
        if descriptor_type == 0x0F:
            return self.bos
        return None


# ---------------------------------------------------------------- the SCSI disk

class ScsiError(Exception):
    def __init__(self, key, asc, ascq=0):
        super().__init__(f"sense {key:02x}/{asc:02x}/{ascq:02x}")
        self.sense = (key, asc, ascq)


class Disk:
    def __init__(self, path, serial):
        try:
            self.fd = os.open(path, os.O_RDWR)
            self.read_only = False
        except PermissionError:
            self.fd = os.open(path, os.O_RDONLY)
            self.read_only = True
        self.blocks = os.fstat(self.fd).st_size // BLOCK
        self.serial = serial
        self.sense = (NO_SENSE, 0, 0)
        self.read_bytes = 0
        self.write_bytes = 0
        self.opcodes = collections.Counter()

    def check_range(self, lba, count):
        if lba + count > self.blocks:
            raise ScsiError(ILLEGAL_REQUEST, 0x21)  # LOGICAL BLOCK ADDRESS OUT OF RANGE

    def command(self, cdb, host_length, host_in):
        """(kind, payload): kind "in" with the data to send, "out" with the number of
        bytes the command wants (and a completion taking them), or "none".
        Raises ScsiError for CHECK CONDITION."""
        op = cdb[0]
        self.opcodes[op] += 1
        if op == 0x00:  # TEST UNIT READY
            return "none", None
        if op == 0x03:  # REQUEST SENSE
            key, asc, ascq = self.sense
            self.sense = (NO_SENSE, 0, 0)
            data = bytearray(18)
            data[0], data[2], data[7], data[12], data[13] = 0x70, key, 10, asc, ascq
            return "in", bytes(data[:cdb[4]])
        if op == 0x12:  # INQUIRY
            return "in", self.inquiry(cdb)[:struct.unpack_from(">H", cdb, 3)[0]]
        if op == 0x25:  # READ CAPACITY(10)
            last = min(self.blocks - 1, 0xFFFFFFFF)
            return "in", struct.pack(">II", last, BLOCK)
        if op == 0x9E and cdb[1] & 0x1F == 0x10:  # SERVICE ACTION IN(16) / READ CAPACITY(16)
            data = struct.pack(">QI", self.blocks - 1, BLOCK) + bytes(20)
            return "in", data[:struct.unpack_from(">I", cdb, 10)[0]]
        if op in (0x1A, 0x5A):  # MODE SENSE(6) / (10)
            return "in", self.mode_sense(cdb)
        if op in (0x28, 0x88):  # READ(10) / READ(16)
            lba, count = self.lba_count(cdb)
            self.check_range(lba, count)
            return "read", (lba, count)
        if op in (0x2A, 0x8A):  # WRITE(10) / WRITE(16)
            lba, count = self.lba_count(cdb)
            self.check_range(lba, count)
            if self.read_only:
                raise ScsiError(7, 0x27)  # DATA PROTECT / WRITE PROTECTED
            return "write", (lba, count)
        if op == 0x2F:  # VERIFY(10)
            lba, count = self.lba_count(cdb)
            self.check_range(lba, count)
            if cdb[1] & 0x06:  # BYTCHK: the data to compare follows; accepted, not compared
                return "discard", count * BLOCK
            return "none", None
        if op in (0x35, 0x91):  # SYNCHRONIZE CACHE(10) / (16)
            os.fsync(self.fd)
            return "none", None
        if op in (0x1E, 0x1B):  # PREVENT ALLOW MEDIUM REMOVAL, START STOP UNIT
            return "none", None
        raise ScsiError(ILLEGAL_REQUEST, 0x20)  # INVALID COMMAND OPERATION CODE

    @staticmethod
    def lba_count(cdb):
        if cdb[0] in (0x88, 0x8A):
            return struct.unpack_from(">Q", cdb, 2)[0], struct.unpack_from(">I", cdb, 10)[0]
        return struct.unpack_from(">I", cdb, 2)[0], struct.unpack_from(">H", cdb, 7)[0]

    def inquiry(self, cdb):
        if cdb[1] & 0x01:  # EVPD
            page = cdb[2]
            if page == 0x00:
                pages = bytes([0x00, 0x80])
                return bytes([0, 0x00, 0, len(pages)]) + pages
            if page == 0x80:
                serial = self.serial.encode("ascii", "replace")
                return bytes([0, 0x80, 0, len(serial)]) + serial
            raise ScsiError(ILLEGAL_REQUEST, 0x24)  # INVALID FIELD IN CDB
        if cdb[2]:
            raise ScsiError(ILLEGAL_REQUEST, 0x24)
        # Direct-access block device, not removable, SPC-4, response data format 2.
        return (bytes([0x00, 0x00, 0x06, 0x02, 31, 0, 0, 0]) + b"hostvmm " + b"usbredir disk   " + b"1.0 ")

    def mode_sense(self, cdb):
        six = cdb[0] == 0x1A
        # Page control (bits 6-7: current, changeable, default, saved) is ignored: the same
        # pages come back for each, nothing here being changeable.
        page = cdb[2] & 0x3F
        caching = bytes([0x08, 0x12]) + bytes(18)  # WCE 0: writes go straight to the file
        exceptions = bytes([0x1C, 0x0A]) + bytes(10)
        if page == 0x08:
            pages = caching
        elif page == 0x1C:
            pages = exceptions
        elif page == 0x3F:
            pages = caching + exceptions
        else:
            raise ScsiError(ILLEGAL_REQUEST, 0x24)
        device_specific = 0x80 if self.read_only else 0x00  # WP
        if six:
            data = bytes([3 + len(pages), 0, device_specific, 0]) + pages
            return data[:cdb[4]]
        data = struct.pack(">HBBBBH", 6 + len(pages), 0, device_specific, 0, 0, 0) + pages
        return data[:struct.unpack_from(">H", cdb, 7)[0]]
