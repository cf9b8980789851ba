"""The carpool advert (`ha.auth = "carpool"`): every field under the MAC, and a counter that
only rises. Between two carpool units only; BSD CARP, ucarp and keepalived drop it (its first
byte reads as version 12).

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    | Form  | Type  |     VHID      |     Flags     |    Demote     |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |          Preference           |         Interval (ms)         |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                     Counter (64 bits)                         |
    +                                                               +
    |                                                               |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |          MAC: HMAC-SHA256, first 16 bytes (4 words)           |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

The MAC covers the 16 bytes before it, the sender's IP source and the shared addresses the
advert stands for (sorted): a copy re-sent from another host, on another link or with any field
changed fails it. A copy re-sent as it was fails the counter rule (ha/replay.py). The key is
derived from the partner shared secret (never the secret itself, which CARP uses as its key).
The Internet checksum CARP carries would add nothing the MAC does not check.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from .drops import DropError, DropReason

Address = IPv4Address | IPv6Address
FORM_TYPE = 0xC1  # form 12, type 1 (advertisement)
SIZE = 32
MAC_LEN = 16
FLAG_BOW_OUT = 0x01
_HEADER = struct.Struct("!BBBBHHQ")
_LABEL = b"carpool advert key v1"


def advert_key(secret: bytes) -> bytes:
    """The MAC key: the secret as a key for a labelled HMAC, so the CARP key (the secret
    itself) and this one never coincide."""
    return hmac.new(secret, _LABEL, hashlib.sha256).digest()


def _mac(key: bytes, header: bytes, source: Address, addresses: Iterable[Address]) -> bytes:
    h = _keyed(key).copy()  # (no digest looked up by name, no key schedule: per advert)
    h.update(header + _covered(source, tuple(addresses)))
    return h.digest()[:MAC_LEN]


# A pair has a key or two and a few (source, addresses) per link: what the MAC covers besides
# the header is the same in every advert of a link, sent or received 50 times a second.
@functools.lru_cache(maxsize=8)
def _keyed(key: bytes) -> hmac.HMAC:
    return hmac.new(key, digestmod=hashlib.sha256)


@functools.lru_cache(maxsize=64)
def _covered(source: Address, addresses: tuple[Address, ...]) -> bytes:
    # IPv4 ascending, then IPv6 ascending (CARP's order); an IPv4-only pair's MAC as before
    ordered = sorted(addresses, key=lambda a: (a.version, int(a)))
    return source.packed + b"".join(a.packed for a in ordered)


@dataclass(frozen=True, kw_only=True)
class SealedAdvert:
    vhid: int
    bow_out: bool
    demote: int
    preference: int
    interval_ms: int
    counter: int

    def header(self) -> bytes:
        return _HEADER.pack(
            FORM_TYPE,
            self.vhid,
            FLAG_BOW_OUT if self.bow_out else 0,
            min(self.demote, 255),
            self.preference,
            min(self.interval_ms, 0xFFFF),
            self.counter,
        )

    def seal(self, key: bytes, source: Address, addresses: Iterable[Address]) -> bytes:
        header = self.header()
        return header + _mac(key, header, source, addresses)


def is_sealed(payload: bytes) -> bool:
    return payload[:1] == bytes((FORM_TYPE,))


def open_sealed(
    payload: bytes, key: bytes, source: Address, addresses: Iterable[Address]
) -> SealedAdvert:
    """Check and decode one sealed advert (the IP payload); raises DropError only."""
    if len(payload) != SIZE:
        raise DropError(DropReason.BAD_LENGTH, f"{len(payload)} bytes, a carpool advert is {SIZE}")
    header, mac = payload[: _HEADER.size], payload[_HEADER.size :]
    form, vhid, flags, demote, preference, interval_ms, counter = _HEADER.unpack(header)
    if form != FORM_TYPE:
        raise DropError(DropReason.BAD_VERSION, f"first byte {form:#04x}")
    if not hmac.compare_digest(mac, _mac(key, header, source, addresses)):
        raise DropError(DropReason.BAD_HMAC, f"from {source} (wrong secret, addresses or copy)")
    if flags & ~FLAG_BOW_OUT:
        raise DropError(DropReason.BAD_TYPE, f"unknown flags {flags:#04x}")
    return SealedAdvert(
        vhid=vhid,
        bow_out=bool(flags & FLAG_BOW_OUT),
        demote=demote,
        preference=preference,
        interval_ms=interval_ms,
        counter=counter,
    )
