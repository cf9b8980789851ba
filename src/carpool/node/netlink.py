"""Netlink message plumbing shared by the raw sockets (links.py: link state; rtaddr.py: shared
addresses; nfset.py: the fence's set): attributes built and read, the messages of a datagram,
the answers (errors and ACKs) to numbered requests. Pure."""

from __future__ import annotations

import struct
from collections.abc import Iterator

NLMSG_ERROR = 2
NLA_F_NESTED = 0x8000
NLMSGHDR = struct.Struct("=IHHII")
RTATTR = struct.Struct("=HH")
_ERROR = struct.Struct("=i")


def align(n: int) -> int:
    return (n + 3) & ~3


def attr(kind: int, payload: bytes, nested: bool = False) -> bytes:
    """One attribute, padded to 4 bytes."""
    raw = RTATTR.pack(RTATTR.size + len(payload), kind | (NLA_F_NESTED if nested else 0))
    raw += payload
    return raw + b"\0" * (align(len(raw)) - len(raw))


def attrs(data: bytes, offset: int) -> dict[int, bytes]:
    """The attributes from `offset` on, by kind (the first of each)."""
    out: dict[int, bytes] = {}
    while offset + RTATTR.size <= len(data):
        length, kind = RTATTR.unpack_from(data, offset)
        if length < RTATTR.size:
            break
        out.setdefault(kind & 0x3FFF, data[offset + RTATTR.size : offset + length])
        offset += align(length)
    return out


def messages(data: bytes) -> Iterator[tuple[int, int, int, bytes]]:
    """(type, flags, seq, body) of each netlink message in one datagram."""
    offset = 0
    while offset + NLMSGHDR.size <= len(data):
        length, kind, flags, seq, _pid = NLMSGHDR.unpack_from(data, offset)
        if length < NLMSGHDR.size:
            break
        yield kind, flags, seq, data[offset + NLMSGHDR.size : offset + length]
        offset += align(length)


def answers(data: bytes) -> Iterator[tuple[int, int]]:
    """(seq, errno) of each answer in a datagram: 0 is an ACK, else the kernel's error."""
    for kind, _flags, seq, body in messages(data):
        if kind == NLMSG_ERROR and len(body) >= _ERROR.size:
            yield seq, -_ERROR.unpack_from(body)[0]
