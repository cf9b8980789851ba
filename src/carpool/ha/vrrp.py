"""VRRP advertisement codec: version 3 (RFC 5798/9568) over IPv4 and IPv6, version 2 (RFC 3768,
IPv4 only).

Version 3 (8 + 4n bytes):

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |Version| Type  |     VRID      |   Priority    | Count IPv4 Ad.|
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |(rsvd) |  Max Adver Int (cs)   |          Checksum             |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                       IPv4 Address(es)                        |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

Checksum over the IPv4 pseudo-header (src, dst, 0, 112, length) + the VRRP packet, as
keepalived does. Over IPv6 the addresses are 16 bytes each (the count field counts them), the
pseudo-header is IPv6's (ha/ipv6.py), the source is the interface's link-local address and the
destination ff02::12; the family of an advert is its sender's.

Version 2 (8 + 4n + 8 bytes):

    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |Version| Type  |     VRID      |   Priority    | Count IP Addrs|
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |  Auth Type    | Adver Int (s) |          Checksum             |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                       IPv4 Address(es)                        |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                 Authentication Data (8 bytes)                 |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

Checksum over the VRRP packet only. We send auth type 0 with zero auth data and accept only that.
Priority 0 = the master resigns; 255 = the address owner.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address

from . import ipv6
from .drops import DropError, DropReason
from .ipv4 import internet_checksum, pseudo_header

Address = IPv4Address | IPv6Address

PROTOCOL = 112
TYPE_ADVERTISEMENT = 1
AUTH_NONE = 0
_HEADER = struct.Struct("!BBBBHH")  # v3: rsvd+interval in one 16-bit field
_HEADER_V2 = struct.Struct("!BBBBBBH")
_AUTH_DATA = 8
_MAX_INTERVAL = {3: 0x0FFF, 2: 0xFF}


@dataclass(frozen=True)
class VrrpAdvert:
    """One VRRP advertisement. `interval` is centiseconds for v3, seconds for v2.
    `pack()` always computes the checksum; `checksum` holds what was received."""

    version: int
    vrid: int
    priority: int
    interval: int
    addresses: tuple[Address, ...]
    checksum: int = 0

    def __post_init__(self) -> None:
        if self.version not in _MAX_INTERVAL:
            raise ValueError(f"VRRP version must be 2 or 3, not {self.version!r}")
        if not 1 <= self.vrid <= 255:
            raise ValueError(f"vrid must be 1..255, not {self.vrid!r}")
        if not 0 <= self.priority <= 255:
            raise ValueError(f"priority must be 0..255, not {self.priority!r}")
        if not 1 <= self.interval <= _MAX_INTERVAL[self.version]:
            raise ValueError(f"v{self.version} interval must be 1..{_MAX_INTERVAL[self.version]}")
        if not 0 <= self.checksum <= 0xFFFF:
            raise ValueError("checksum must be 16 bits")
        addresses = tuple(ip_address(a) for a in self.addresses)
        if not 1 <= len(addresses) <= 255:
            raise ValueError("a VRRP advert carries 1..255 addresses")
        if len({a.version for a in addresses}) != 1:
            raise ValueError("a VRRP advert carries the addresses of one family")
        if self.version == 2 and addresses[0].version == 6:
            raise ValueError("VRRPv2 is IPv4 only")
        object.__setattr__(self, "addresses", addresses)

    def _body(self, checksum: int) -> bytes:
        addrs = b"".join(a.packed for a in self.addresses)
        first = self.version << 4 | TYPE_ADVERTISEMENT
        if self.version == 3:
            return (
                _HEADER.pack(
                    first, self.vrid, self.priority, len(self.addresses), self.interval, checksum
                )
                + addrs
            )
        return (
            _HEADER_V2.pack(
                first,
                self.vrid,
                self.priority,
                len(self.addresses),
                AUTH_NONE,
                self.interval,
                checksum,
            )
            + addrs
            + bytes(_AUTH_DATA)
        )

    def pack(self, src: Address, dst: Address) -> bytes:
        """The VRRP packet (IP payload). src/dst matter only to the v3 checksum."""
        body = self._body(0)
        covered = body
        if self.version == 3:
            covered = _pseudo_header(src, dst, len(body)) + body
        checksum = internet_checksum(covered)
        return body[:6] + checksum.to_bytes(2, "big") + body[8:]

    @classmethod
    def unpack(cls, data: bytes, src: Address, dst: Address) -> VrrpAdvert:
        """Decode and check one advert (the IP payload) sent from src to dst (their family is
        the advert's); raises DropError only."""
        family = ip_address(src).version
        if ip_address(dst).version != family:
            raise DropError(DropReason.BAD_IP_HEADER, f"from {src} to {dst}")
        width = 16 if family == 6 else 4
        if len(data) < _HEADER.size:
            raise DropError(DropReason.TOO_SHORT, f"{len(data)} bytes, VRRP header is 8")
        version, kind = data[0] >> 4, data[0] & 0x0F
        if version not in _MAX_INTERVAL:
            raise DropError(DropReason.BAD_VERSION, f"VRRP version {version}")
        if kind != TYPE_ADVERTISEMENT:
            raise DropError(DropReason.BAD_TYPE, f"VRRP type {kind}")
        count = data[3]
        if version == 2 and width == 16:
            raise DropError(DropReason.BAD_VERSION, "VRRPv2 over IPv6")
        expected = 8 + width * count + (_AUTH_DATA if version == 2 else 0)
        if len(data) != expected:
            reason = DropReason.TOO_SHORT if len(data) < expected else DropReason.BAD_LENGTH
            raise DropError(reason, f"{len(data)} bytes for {count} addresses (v{version})")
        covered = bytes(data)
        if version == 3:
            covered = _pseudo_header(src, dst, len(data)) + covered
        checksum = int.from_bytes(data[6:8], "big")
        if internet_checksum(covered) != 0:
            raise DropError(DropReason.BAD_CHECKSUM, f"VRRP checksum {checksum:#06x}")
        if version == 3:
            interval = int.from_bytes(data[4:6], "big") & 0x0FFF  # receivers ignore rsvd bits
        else:
            if data[4] != AUTH_NONE:
                raise DropError(DropReason.BAD_AUTHLEN, f"VRRPv2 auth type {data[4]}")
            interval = data[5]
        if data[1] == 0:
            raise DropError(DropReason.WRONG_VHID, "vrid 0")
        if count == 0:
            raise DropError(DropReason.WRONG_ADDRESSES, "no addresses")
        if interval == 0:
            raise DropError(DropReason.BAD_INTERVAL, "advert interval 0")
        make = IPv6Address if width == 16 else IPv4Address
        addresses = tuple(make(data[8 + width * i : 8 + width * (i + 1)]) for i in range(count))
        return cls(version, data[1], data[2], interval, addresses, checksum)


def _pseudo_header(src: Address | str, dst: Address | str, length: int) -> bytes:
    s, d = ip_address(src), ip_address(dst)
    if isinstance(s, IPv6Address) and isinstance(d, IPv6Address):
        return ipv6.pseudo_header(s, d, PROTOCOL, length)
    if isinstance(s, IPv4Address) and isinstance(d, IPv4Address):
        return pseudo_header(s, d, PROTOCOL, length)
    raise ValueError(f"source {s} and destination {d} are of different families")
