"""IPv6 facts the adverts need (pure): the CARP/VRRP group, the hop limit every advert carries
and receivers require (the sender is on this link: RFC 9568 §7.1, OpenBSD CARP), and the IPv6
pseudo-header upper-layer checksums cover (RFC 8200 §8.1). The kernel hands raw IPv6 sockets
the payload only: the addresses and hop limit come from ancillary data, not from a header we
parse."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv6Address

from ..family import IPV6

GROUP = IPv6Address(IPV6.group)  # CARP and VRRP over IPv6: ff02::12
ALL_NODES = IPv6Address(IPV6.broadcast)  # ff02::1: unsolicited neighbour advertisements
HOP_LIMIT = 255


def pseudo_header(src: IPv6Address, dst: IPv6Address, next_header: int, length: int) -> bytes:
    """Source, destination, upper-layer length (32 bits), three zero bytes, next header."""
    return src.packed + dst.packed + struct.pack("!I3xB", length, next_header)


@dataclass(frozen=True)
class Ipv6Packet:
    """What a raw IPv6 socket tells of one datagram (node/rawsock.py builds it from recvmsg's
    address and ancillary data): the IPv4 packet's fields, hop limit in place of TTL."""

    src: IPv6Address
    dst: IPv6Address
    ttl: int  # the hop limit
    protocol: int
    payload: bytes
