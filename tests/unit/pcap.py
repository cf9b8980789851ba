"""A tiny pcap reader for the golden vectors (classic pcap, Ethernet link type only)."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

from carpool.ha.ipv4 import Ipv4Packet, parse_ipv4

# Captured from real peers (ucarp, keepalived), kept in the repository: tests/vectors.
VECTORS = Path(__file__).resolve().parents[1] / "vectors"
LINKTYPE_ETHERNET = 1
ETHERTYPE_IPV4 = 0x0800
_MAGIC = {  # magic as read little-endian -> (byte order, fraction-of-second divisor)
    0xA1B2C3D4: ("<", 1e6),
    0xD4C3B2A1: (">", 1e6),
    0xA1B23C4D: ("<", 1e9),
    0x4D3CB2A1: (">", 1e9),
}


def read_pcap(path: str | Path) -> Iterator[tuple[float, bytes]]:
    """Yield (timestamp, frame bytes) for each record of an Ethernet pcap file."""
    data = Path(path).read_bytes()
    if len(data) < 24:
        raise ValueError(f"{path}: not a pcap file")
    order, scale = _MAGIC.get(struct.unpack_from("<I", data)[0], (None, 0.0))
    if order is None:
        raise ValueError(f"{path}: bad pcap magic")
    linktype = struct.unpack_from(order + "I", data, 20)[0] & 0x0FFFFFFF
    if linktype != LINKTYPE_ETHERNET:
        raise ValueError(f"{path}: link type {linktype}, expected Ethernet")
    offset = 24
    while offset < len(data):
        sec, frac, incl, _orig = struct.unpack_from(order + "IIII", data, offset)
        offset += 16
        frame = data[offset : offset + incl]
        if len(frame) != incl:
            raise ValueError(f"{path}: truncated record at {offset}")
        offset += incl
        yield sec + frac / scale, frame


def ip_datagram(frame: bytes) -> bytes:
    """The IPv4 datagram in an Ethernet frame, header included (what a raw socket gets)."""
    (ethertype,) = struct.unpack_from("!H", frame, 12)
    if ethertype != ETHERTYPE_IPV4:
        raise ValueError(f"ethertype {ethertype:#06x} is not IPv4")
    return frame[14:]


def ipv4_packet(frame: bytes) -> Ipv4Packet:
    """src, dst, ttl, protocol and payload of the IPv4 packet in an Ethernet frame."""
    return parse_ipv4(ip_datagram(frame))


def vector(name: str) -> list[tuple[bytes, Ipv4Packet]]:
    """Every (raw datagram, parsed packet) of a golden vector file."""
    return [(ip_datagram(f), ipv4_packet(f)) for _ts, f in read_pcap(VECTORS / name)]
