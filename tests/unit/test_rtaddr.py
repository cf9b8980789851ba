"""The raw RTM_NEWADDR of a renewal (node/rtaddr.py), read back field by field."""

from __future__ import annotations

import socket
import struct

from carpool.node import netlink, rtaddr


def attrs(body: bytes) -> dict[int, bytes]:
    out, offset = {}, rtaddr._IFADDRMSG.size
    while offset + 4 <= len(body):
        length, kind = struct.unpack_from("=HH", body, offset)
        out[kind] = body[offset + 4 : offset + length]
        offset += (length + 3) & ~3
    return out


def parse(msg: bytes):
    length, kind, flags, seq, _pid = netlink.NLMSGHDR.unpack_from(msg)
    body = msg[netlink.NLMSGHDR.size :]
    assert length == len(msg) and kind == rtaddr.RTM_NEWADDR and seq == 9
    assert flags == rtaddr.NLM_F_REQUEST | rtaddr.NLM_F_ACK | 0x100 | 0x400  # replace, create
    return rtaddr._IFADDRMSG.unpack_from(body), attrs(body)


def test_ipv4_local_address_broadcast_and_lifetimes():
    (family, prefixlen, flags, scope, index), a = parse(rtaddr.request(7, "198.18.0.10/24", 3, 9))
    assert (family, prefixlen, flags, scope, index) == (socket.AF_INET, 24, 0, 0, 7)
    assert a[rtaddr.IFA_LOCAL] == a[rtaddr.IFA_ADDRESS] == socket.inet_aton("198.18.0.10")
    assert a[rtaddr.IFA_BROADCAST] == socket.inet_aton("198.18.0.255")
    assert struct.unpack("=IIII", a[rtaddr.IFA_CACHEINFO])[:2] == (3, 3)
    point = attrs(rtaddr.request(7, "198.18.0.10/31", 3, 9)[netlink.NLMSGHDR.size :])
    assert rtaddr.IFA_BROADCAST not in point  # no broadcast on a /31


def test_ipv6_nodad_and_deprecated():
    (family, prefixlen, flags, _scope, _index), a = parse(rtaddr.request(4, "2001:2::10/64", 5, 9))
    assert (family, prefixlen, flags) == (socket.AF_INET6, 64, rtaddr.IFA_F_NODAD)
    assert a[rtaddr.IFA_ADDRESS] == socket.inet_pton(socket.AF_INET6, "2001:2::10")
    assert struct.unpack("=I", a[rtaddr.IFA_FLAGS])[0] == rtaddr.IFA_F_NODAD
    assert struct.unpack("=IIII", a[rtaddr.IFA_CACHEINFO])[:2] == (0, 5)  # never preferred
