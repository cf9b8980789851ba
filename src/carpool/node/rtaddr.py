"""A held shared address's kernel lifetime renewed with one raw RTM_NEWADDR (replace): the
active unit does it every second for each address, and pyroute2 spent about a millisecond a
call on it (a third of an idle unit's CPU); a kernel round trip on a kept socket is tens of
microseconds. The same request as node/addresses.py's first add (nodad and deprecated for
IPv6, the broadcast for IPv4): a replace also puts back an address that went.

Blocking, on the netlink thread (node/shared.py), one socket per thread."""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
import threading

from . import netlink as nl

NETLINK_ROUTE = 0
RTM_NEWADDR = 20
NLM_F_REQUEST, NLM_F_ACK, NLM_F_REPLACE, NLM_F_CREATE = 0x1, 0x4, 0x100, 0x400
IFA_ADDRESS, IFA_LOCAL, IFA_BROADCAST, IFA_CACHEINFO, IFA_FLAGS = 1, 2, 4, 6, 8
IFA_F_NODAD = 0x02
IFA_F_NOPREFIXROUTE = 0x200

_IFADDRMSG = struct.Struct("=BBBBi")
_CACHEINFO = struct.Struct("=IIII")
_local = threading.local()


def request(index: int, cidr: str, lifetime: int, seq: int, extra: int = 0) -> bytes:
    """The RTM_NEWADDR (create or replace) for `cidr` on interface `index` (pure); `extra`:
    more IFA_F_* flags."""
    iface = ipaddress.ip_interface(cidr)
    address = iface.ip.packed
    if iface.version == 6:
        family, flags, preferred = socket.AF_INET6, IFA_F_NODAD | extra, 0  # never a source
        attrs = nl.attr(IFA_ADDRESS, address) + nl.attr(IFA_FLAGS, struct.pack("=I", flags))
    else:
        family, flags, preferred = socket.AF_INET, extra, lifetime
        attrs = nl.attr(IFA_LOCAL, address) + nl.attr(IFA_ADDRESS, address)
        if extra:
            attrs += nl.attr(IFA_FLAGS, struct.pack("=I", flags))
        if iface.network.prefixlen < 31:
            attrs += nl.attr(IFA_BROADCAST, iface.network.broadcast_address.packed)
    attrs += nl.attr(IFA_CACHEINFO, _CACHEINFO.pack(preferred, lifetime, 0, 0))
    body = _IFADDRMSG.pack(family, iface.network.prefixlen, flags & 0xFF, 0, index) + attrs
    header = nl.NLMSGHDR.pack(
        nl.NLMSGHDR.size + len(body),
        RTM_NEWADDR,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_REPLACE | NLM_F_CREATE,
        seq,
        0,
    )
    return header + body


def _socket() -> socket.socket:
    sock = getattr(_local, "sock", None)
    if sock is None:
        sock = socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE
        )
        sock.settimeout(1.0)
        sock.bind((0, 0))
        _local.sock, _local.seq = sock, 0
    return sock


def renew(ifname: str, cidr: str, lifetime: int, extra: int = 0) -> None:
    """Add or renew `cidr` on `ifname` for `lifetime` s; OSError as the kernel says."""
    error = renew_many([(ifname, cidr)], lifetime, extra)[0]
    if error is not None:
        raise error


def renew_many(items: list[tuple[str, str]], lifetime: int, extra: int = 0) -> list[OSError | None]:
    """Each (interface, cidr) added or renewed, all in one datagram (a takeover's addresses in
    one netlink batch); per item None or the OSError the kernel gave."""
    out: list[OSError | None] = [None] * len(items)
    messages: list[bytes] = []
    waiting: dict[int, int] = {}  # sequence number -> item
    sock = _socket()
    for n, (ifname, cidr) in enumerate(items):
        try:
            index = socket.if_nametoindex(ifname)
        except OSError:
            out[n] = OSError(errno.ENODEV, f"no interface {ifname}")
            continue
        _local.seq = (_local.seq + 1) % 0x7FFFFFFF
        waiting[_local.seq] = n
        messages.append(request(index, cidr, lifetime, _local.seq, extra))
    if not messages:
        return out
    try:
        sock.send(b"".join(messages))
        while waiting:
            for got, code in nl.answers(sock.recv(65536)):
                n = waiting.pop(got, -1)
                if n >= 0 and code:
                    out[n] = OSError(code, f"netlink: {errno.errorcode.get(code, code)}")
    except (TimeoutError, ConnectionError, BlockingIOError) as e:
        _local.sock.close()
        _local.sock = None  # a socket in doubt is made afresh
        for n in waiting.values():
            out[n] = OSError(errno.ETIMEDOUT, f"netlink: {e}")
    return out
