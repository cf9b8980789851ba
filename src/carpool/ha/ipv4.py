"""IPv4 header parsing for datagrams as a raw socket delivers them (header included).

 0                   1                   2                   3
 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
|Version|  IHL  |Type of Service|          Total Length         |
+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
|         Identification        |Flags|      Fragment Offset    |
+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
|  Time to Live |    Protocol   |         Header Checksum       |
+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
|                       Source Address                          |
+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
|                    Destination Address                        |
+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
|                    Options (IHL > 5)                          |
+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv4Address

from .drops import DropError, DropReason

PROTO_CARP = 112  # CARP and VRRP share IP protocol 112 (and the doctor's probes ride it)
TTL = 255  # adverts are sent with 255 and only 255 is accepted: the sender is on this link

_HEADER = struct.Struct("!BBHHHBBH4s4s")
_MF, _OFFSET = 0x2000, 0x1FFF


def internet_checksum(data: bytes) -> int:
    """RFC 1071 one's-complement checksum; 0 when computed over data that includes a valid one."""
    if len(data) % 2:
        data = bytes(data) + b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))  # "H" unpacks to ints
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def pseudo_header(src: IPv4Address, dst: IPv4Address, protocol: int, length: int) -> bytes:
    """The IPv4 pseudo-header upper-layer checksums cover (RFC 768 / RFC 5798 §5.2.8)."""
    return src.packed + dst.packed + struct.pack("!BBH", 0, protocol, length)


@dataclass(frozen=True)
class Ipv4Packet:
    src: IPv4Address
    dst: IPv4Address
    ttl: int
    protocol: int
    payload: bytes

    def pack(self) -> bytes:
        """A 20-byte header (no options, DF, checksum computed) + payload; for tests and tools."""
        total = 20 + len(self.payload)
        header = _HEADER.pack(
            0x45,
            0xC0,
            total,
            0,
            0x4000,
            self.ttl,
            self.protocol,
            0,
            self.src.packed,
            self.dst.packed,
        )
        checksum = internet_checksum(header)
        return header[:10] + checksum.to_bytes(2, "big") + header[12:] + self.payload


def parse_ipv4(datagram: bytes) -> Ipv4Packet:
    """Split a raw IPv4 datagram into header facts and payload; raises DropError only.

    The header checksum is not checked: the kernel drops bad ones before raw-socket delivery.
    Bytes past Total Length (link padding) are not payload.
    """
    if len(datagram) < _HEADER.size:
        raise DropError(DropReason.TOO_SHORT, f"{len(datagram)} bytes, no IPv4 header")
    vihl, _tos, total, _id, frag, ttl, proto, _sum, src, dst = _HEADER.unpack_from(datagram)
    if vihl >> 4 != 4:
        raise DropError(DropReason.BAD_IP_HEADER, f"IP version {vihl >> 4}")
    hlen = (vihl & 0x0F) * 4
    if hlen < _HEADER.size:
        raise DropError(DropReason.BAD_IP_HEADER, f"IHL {hlen // 4}")
    if total < hlen:
        raise DropError(DropReason.BAD_IP_HEADER, f"total length {total} < header {hlen}")
    if len(datagram) < total:
        raise DropError(DropReason.TOO_SHORT, f"{len(datagram)} bytes, total length {total}")
    if frag & (_MF | _OFFSET):
        # Raw sockets get reassembled datagrams; a fragment here is not a whole advert.
        raise DropError(DropReason.BAD_IP_HEADER, "fragment")
    return Ipv4Packet(IPv4Address(src), IPv4Address(dst), ttl, proto, bytes(datagram[hlen:total]))
