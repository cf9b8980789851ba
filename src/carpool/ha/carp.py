"""CARP advertisement codec (OpenBSD/FreeBSD CARP, ucarp), IPv4 and IPv6 (the same header).

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |Version| Type  |     VHID      |    AdvSkew    |  AuthLen (7)  |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |    Demote     |    AdvBase    |          Checksum             |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                     Counter (64 bits)                         |
    +                                                               +
    |                                                               |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                  HMAC-SHA1 (20 bytes, 5 words)                |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

Version 2, type 1 (advertisement). Demote is OpenBSD's; FreeBSD and ucarp send 0 ("reserved").
Checksum: Internet checksum over these 36 bytes only. AuthLen counts the 32-bit words of
counter + HMAC. Interval = advbase + advskew/256 seconds.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Iterable
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv6Address, ip_address

from .drops import DropError, DropReason
from .ipv4 import internet_checksum

VERSION = 2
TYPE_ADVERTISEMENT = 1
AUTHLEN = 7
KEY_LEN = 20
SIZE = 36
BOW_OUT = (255, 255)  # advbase, advskew of a master that leaves: backups take over at once

_HEADER = struct.Struct("!BBBBBBHQ20s")


Address = IPv4Address | IPv6Address


def _ordered(addresses: Iterable[Address | str], link_local: bool) -> list[Address]:
    """The IPv4 addresses ascending, then the IPv6 ones ascending (byte order), scope cleared;
    IPv6 link-local ones only with `link_local`."""
    parsed = [ip_address(str(a).split("%", 1)[0]) for a in addresses]
    v4 = sorted(a for a in parsed if isinstance(a, IPv4Address))
    v6 = sorted(
        a for a in parsed if isinstance(a, IPv6Address) and (link_local or not a.is_link_local)
    )
    return [*v4, *v6]


def carp_hmac(
    key: bytes,
    vhid: int,
    addresses: Iterable[Address | str],
    counter: int,
    link_local: bool = False,
) -> bytes:
    """HMAC-SHA1 as BSD CARP and ucarp compute it.

    The key is the passphrase itself, cut/zero-padded to 20 bytes (not hashed, whatever
    ip_carp.h's comment says). Inner data: version byte, type byte, vhid, the IPv4 addresses in
    ascending order (4 bytes each), then the IPv6 ones in ascending order (16 bytes each, scope
    cleared; OpenBSD sends without link-local addresses and accepts both), the counter as on
    the wire (64-bit big endian).
    """
    data = bytes((VERSION, TYPE_ADVERTISEMENT, vhid))
    data += b"".join(a.packed for a in _ordered(addresses, link_local))
    data += counter.to_bytes(8, "big")
    return hmac.new(key[:KEY_LEN].ljust(KEY_LEN, b"\0"), data, hashlib.sha1).digest()


def _check_range(name: str, value: int, bits: int) -> None:
    if not isinstance(value, int) or not 0 <= value < 1 << bits:
        raise ValueError(f"{name} must be a {bits}-bit unsigned int, not {value!r}")


@dataclass(frozen=True, kw_only=True)
class CarpAdvert:
    """One CARP advertisement. `pack()` always computes the checksum; `checksum` holds what was
    received (or what `build` computed)."""

    version: int = VERSION
    type: int = TYPE_ADVERTISEMENT
    vhid: int
    advskew: int
    authlen: int = AUTHLEN
    demote: int = 0
    advbase: int
    checksum: int = 0
    counter: int
    md: bytes

    def __post_init__(self) -> None:
        for name, bits in (
            ("version", 4),
            ("type", 4),
            ("vhid", 8),
            ("advskew", 8),
            ("authlen", 8),
            ("demote", 8),
            ("advbase", 8),
            ("checksum", 16),
            ("counter", 64),
        ):
            _check_range(name, getattr(self, name), bits)
        if not isinstance(self.md, bytes) or len(self.md) != 20:
            raise ValueError("md must be 20 bytes")

    @property
    def interval(self) -> float:
        return self.advbase + self.advskew / 256

    def pack(self) -> bytes:
        def fields(checksum: int) -> bytes:
            return _HEADER.pack(
                self.version << 4 | self.type,
                self.vhid,
                self.advskew,
                self.authlen,
                self.demote,
                self.advbase,
                checksum,
                self.counter,
                self.md,
            )

        return fields(internet_checksum(fields(0)))

    @classmethod
    def unpack(cls, data: bytes) -> CarpAdvert:
        """Decode and check one advert (the IP payload); raises DropError only."""
        if len(data) < SIZE:
            raise DropError(DropReason.TOO_SHORT, f"{len(data)} bytes, CARP needs {SIZE}")
        if len(data) > SIZE:
            # Also what tells a long VRRPv2 packet (same first byte 0x21) from CARP.
            raise DropError(DropReason.BAD_LENGTH, f"{len(data)} bytes, CARP is {SIZE}")
        vt, vhid, advskew, authlen, demote, advbase, checksum, counter, md = _HEADER.unpack(data)
        if vt >> 4 != VERSION:
            raise DropError(DropReason.BAD_VERSION, f"CARP version {vt >> 4}")
        if vt & 0x0F != TYPE_ADVERTISEMENT:
            raise DropError(DropReason.BAD_TYPE, f"CARP type {vt & 0x0F}")
        if authlen != AUTHLEN:
            raise DropError(DropReason.BAD_AUTHLEN, f"authlen {authlen}")
        if internet_checksum(data) != 0:
            raise DropError(DropReason.BAD_CHECKSUM, f"CARP checksum {checksum:#06x}")
        if vhid == 0:
            raise DropError(DropReason.WRONG_VHID, "vhid 0")
        if advbase == 0 and advskew == 0:
            raise DropError(DropReason.BAD_INTERVAL, "advbase 0, advskew 0")
        return cls(
            version=vt >> 4,
            type=vt & 0x0F,
            vhid=vhid,
            advskew=advskew,
            authlen=authlen,
            demote=demote,
            advbase=advbase,
            checksum=checksum,
            counter=counter,
            md=bytes(md),
        )

    @classmethod
    def build(
        cls,
        key: bytes,
        vhid: int,
        advbase: int,
        advskew: int,
        demote: int,
        counter: int,
        addresses: Iterable[Address | str],
    ) -> CarpAdvert:
        """An advert signed with `key` over `addresses`, checksum filled in."""
        advert = cls(
            vhid=vhid,
            advskew=advskew,
            demote=demote,
            advbase=advbase,
            counter=counter,
            md=carp_hmac(key, vhid, addresses, counter),
        )
        return replace(advert, checksum=int.from_bytes(advert.pack()[6:8], "big"))

    def verify(self, key: bytes, addresses: Iterable[Address | str]) -> bool:
        """True when the HMAC matches `key` and the shared addresses, with or without the
        IPv6 link-local ones, as OpenBSD accepts (constant-time compares)."""
        addresses = list(addresses)
        forms = (False, True) if any(_is_link_local(a) for a in addresses) else (False,)
        return any(
            hmac.compare_digest(
                self.md, carp_hmac(key, self.vhid, addresses, self.counter, link_local)
            )
            for link_local in forms
        )


def _is_link_local(address: Address | str) -> bool:
    return ip_address(str(address).split("%", 1)[0]).is_link_local
