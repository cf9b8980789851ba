"""Raw IP protocol-112 sockets for CARP/VRRP adverts, one per interface.

No protocol logic here: the socket sends the payload it is given (the kernel builds the IPv4
header, source = the interface's own address, TTL 255) and hands back whole datagrams, IPv4 header
included, for carpool.ha to judge.

Per-interface delivery. A raw socket sees every protocol-112 datagram the host receives unless it
is narrowed down; three things keep an advert that arrived on eth0 out of the eth1 socket:
- SO_BINDTODEVICE (the kernel matches raw sockets against the ingress device);
- IP_MULTICAST_ALL off, so the socket gets 224.0.0.18 only through its own membership, which is
  joined on its own interface index;
- every datagram's IP_PKTINFO ingress index is compared with the socket's interface, and one that
  does not match (e.g. queued between socket() and the bind) is dropped and counted as
  UNKNOWN_INTERFACE.
Own adverts: multicast loopback is off, but the kernel always loops a broadcast back to the
sender; datagrams whose IPv4 source is `ifaddr` are therefore dropped here — the one own-packet
check — and counted as OWN_PACKET (a partner with the same address would show up there too).
Both counts go to the `drops` counter the caller hands in, beside the decoders' drops.

Sources. A raw socket is not bind()-ed (that would also filter received datagrams by destination
address); the source address and the outgoing interface are set per datagram with an IP_PKTINFO
control message instead, so the VRRPv3 pseudo-header checksum computed over `ifaddr` is right.
"""

from __future__ import annotations

import collections
import errno
import ipaddress
import logging
import socket
import struct
import time
from typing import overload

from .. import family
from ..ha import ipv6
from ..ha.drops import DropReason
from ..ha.ipv4 import PROTO_CARP, TTL
from ..ha.ipv6 import Ipv6Packet

log = logging.getLogger("carpool.rawsock")

GROUP = ipaddress.IPv4Address(family.IPV4.group)
LIMITED_BROADCAST = ipaddress.IPv4Address(family.IPV4.broadcast)
MULTICAST_GROUP = str(GROUP)
TRANSPORTS = ("multicast", "unicast", "broadcast")


@overload
def destinations(transport: str, partner: ipaddress.IPv4Address) -> list[ipaddress.IPv4Address]: ...
@overload
def destinations(transport: str, partner: ipaddress.IPv6Address) -> list[ipaddress.IPv6Address]: ...
def destinations(
    transport: str, partner: ipaddress.IPv4Address | ipaddress.IPv6Address
) -> list[ipaddress.IPv4Address] | list[ipaddress.IPv6Address]:
    """Where adverts (and doctor probes) go on one interface, in the partner's family: the
    group (224.0.0.18, ff02::12), the partner's own address on that link, or the link's
    broadcast — the limited broadcast (never routed, whatever the prefix); IPv6 has none, its
    all-nodes group ff02::1 is the same reach."""
    if transport not in TRANSPORTS:
        raise ValueError(f"unknown transport {transport!r} (expected one of {TRANSPORTS})")
    if isinstance(partner, ipaddress.IPv6Address):
        if transport == "unicast":
            return [partner]
        return [ipv6.GROUP if transport == "multicast" else ipv6.ALL_NODES]
    if transport == "unicast":
        return [partner]
    return [GROUP if transport == "multicast" else LIMITED_BROADCAST]


# Linux <linux/in.h> values the socket module does not export everywhere.
IP_PKTINFO = 8
IP_MULTICAST_ALL = 49
_PKTINFO = struct.Struct("i4s4s")  # struct in_pktinfo: ifindex, spec_dst, addr
_MREQN = struct.Struct("4s4si")  # struct ip_mreqn: multiaddr, address, ifindex
_MAX_DATAGRAM = 65535
_CMSG_SPACE = socket.CMSG_SPACE(_PKTINFO.size)
_BATCH = 256  # datagrams per recv_all() call; the rest stays queued and the fd stays readable


class AdvertSocket:
    """A non-blocking raw IPPROTO 112 socket bound to one interface.

    Raises OSError on construction (ENODEV: no such interface, EPERM: not root…). After that,
    send() never raises and recv_all() never raises.
    """

    def __init__(
        self,
        ifname: str,
        ifaddr: str,
        transport: str = "multicast",
        drops: collections.Counter | None = None,
    ):
        if transport not in TRANSPORTS:
            raise ValueError(f"unknown transport {transport!r} (expected one of {TRANSPORTS})")
        self.ifname = ifname
        self.ifaddr = str(ipaddress.IPv4Address(ifaddr))
        self.transport = transport
        self.ifindex = socket.if_nametoindex(ifname)  # OSError(ENODEV-like) if missing
        self.drops: collections.Counter = collections.Counter() if drops is None else drops
        self._own = socket.inet_aton(self.ifaddr)
        self.last_error: OSError | None = None  # the last send error, for logging
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, PROTO_CARP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
            sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
            sock.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, TTL)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, TTL)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
            mreqn_if = _MREQN.pack(b"\0" * 4, socket.inet_aton(self.ifaddr), self.ifindex)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn_if)
            if transport == "multicast":
                mreq = _MREQN.pack(
                    socket.inet_aton(MULTICAST_GROUP), socket.inet_aton(self.ifaddr), self.ifindex
                )
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
            if transport == "broadcast":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._cmsg = [
            (
                socket.IPPROTO_IP,
                IP_PKTINFO,
                _PKTINFO.pack(self.ifindex, socket.inet_aton(self.ifaddr), b"\0" * 4),
            )
        ]
        # Anything queued before SO_BINDTODEVICE took effect may come from any interface.
        self.recv_all()

    def __repr__(self) -> str:
        return f"AdvertSocket({self.ifname!r}, {self.ifaddr!r}, {self.transport!r})"

    def fileno(self) -> int:
        return self._sock.fileno()

    def send(self, payload: bytes, dst: str) -> bool:
        """Send one advert (payload without IP header) to dst; False on any OSError."""
        try:
            self._sock.sendmsg([payload], self._cmsg, 0, (str(dst), 0))
            return True
        except OSError as e:
            self.last_error = e
            log.debug("%s: send to %s failed: %s", self.ifname, dst, e)
            return False

    def _recv_one(self) -> bytes | None:
        """One datagram from this interface, None when the queue is empty (or on error)."""
        while True:
            try:
                data, ancdata, _flags, _addr = self._sock.recvmsg(_MAX_DATAGRAM, _CMSG_SPACE)
            except (BlockingIOError, InterruptedError):
                return None
            except OSError as e:
                if e.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                    return None
                log.debug("%s: recv error: %s", self.ifname, e)
                return None
            ifindex = None
            for level, kind, value in ancdata:
                if (
                    level == socket.IPPROTO_IP
                    and kind == IP_PKTINFO
                    and len(value) >= _PKTINFO.size
                ):
                    ifindex = _PKTINFO.unpack_from(value)[0]
            if ifindex is not None and ifindex != self.ifindex:
                self.drops[DropReason.UNKNOWN_INTERFACE] += 1
                continue
            if data[12:16] == self._own:
                self.drops[DropReason.OWN_PACKET] += 1
                continue
            return data

    def recv_all(self) -> list[bytes]:
        """Every queued datagram (IPv4 header included), without blocking (at most 256 a call)."""
        out = []
        for _ in range(_BATCH):
            data = self._recv_one()
            if data is None:
                break
            out.append(data)
        return out

    @property
    def foreign_dropped(self) -> int:
        """Datagrams that arrived on another interface (in the counter this socket counts into)."""
        return self.drops[DropReason.UNKNOWN_INTERFACE]

    @property
    def own_dropped(self) -> int:
        return self.drops[DropReason.OWN_PACKET]

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> AdvertSocket:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- IPv6 ---------------------------------------------------------------------------------------
IPV6_MULTICAST_ALL = 29  # <linux/in6.h>: like IP_MULTICAST_ALL, memberships of this socket only
_PKTINFO6 = struct.Struct("16sI")  # struct in6_pktinfo: address, ifindex
_HOPLIMIT = struct.Struct("i")
_MREQ6 = struct.Struct("16sI")  # struct ipv6_mreq: group, ifindex
_CMSG_SPACE6 = socket.CMSG_SPACE(_PKTINFO6.size) + socket.CMSG_SPACE(_HOPLIMIT.size)


def link_local(ifname: str) -> ipaddress.IPv6Address | None:
    """The interface's usable link-local address (not tentative, not failed DAD), if it has
    one yet: VRRPv3 over IPv6 is sent from it (RFC 9568 §5.1.2.1). From /proc/net/if_inet6,
    one read of a small file."""
    try:
        with open("/proc/net/if_inet6") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        # address, ifindex, prefix length, scope (0x20 link), flags (0x40 tentative,
        # 0x08 dadfailed), name
        if len(fields) == 6 and fields[5] == ifname and int(fields[3], 16) == 0x20:
            if int(fields[4], 16) & 0x48:
                continue
            return ipaddress.IPv6Address(int(fields[0], 16))
    return None


class AdvertSocket6:
    """The IPv6 twin of AdvertSocket: raw IPPROTO 112 over IPv6 on one interface.

    A raw IPv6 socket hands over the payload only: the source comes from the sender's address,
    the destination and the ingress interface from IPV6_PKTINFO, the hop limit (which must be
    255) from IPV6_HOPLIMIT; recv_all() returns ha.ipv6.Ipv6Packet. The source of what we send
    is set per datagram (IPV6_PKTINFO): the unit's global address on the link, or its
    link-local one for VRRPv3 (`source=None`: looked up when sending, so a link that had none
    at start, or lost it, is used as soon as it has one)."""

    def __init__(
        self,
        ifname: str,
        source: ipaddress.IPv6Address | None,
        transport: str = "multicast",
        drops: collections.Counter | None = None,
    ):
        if transport not in TRANSPORTS:
            raise ValueError(f"unknown transport {transport!r} (expected one of {TRANSPORTS})")
        self.ifname = ifname
        self.source = source
        self.transport = transport
        self.ifindex = socket.if_nametoindex(ifname)
        self.drops: collections.Counter = collections.Counter() if drops is None else drops
        self.last_error: OSError | None = None
        self._link_local: ipaddress.IPv6Address | None = None
        self._looked_up = float("-inf")
        sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, PROTO_CARP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MULTICAST_ALL, 0)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, ipv6.HOP_LIMIT)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, ipv6.HOP_LIMIT)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, self.ifindex)
            if transport != "unicast":  # IPv6's broadcast is all-nodes: joined here too, as
                # IPV6_MULTICAST_ALL off delivers only this socket's own groups
                group = ipv6.GROUP if transport == "multicast" else ipv6.ALL_NODES
                mreq = _MREQ6.pack(group.packed, self.ifindex)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self.recv_all()

    def __repr__(self) -> str:
        return f"AdvertSocket6({self.ifname!r}, {self.source!r}, {self.transport!r})"

    def fileno(self) -> int:
        return self._sock.fileno()

    def sender(self) -> ipaddress.IPv6Address | None:
        """The address adverts leave from: the configured one, else the link-local one (looked
        up at most once a second: a flood must not read /proc per datagram)."""
        if self.source is not None:
            return self.source
        now = time.monotonic()
        if now - self._looked_up >= 1.0:
            self._link_local, self._looked_up = link_local(self.ifname), now
        return self._link_local

    def send(self, payload: bytes, dst: str, source: ipaddress.IPv6Address) -> bool:
        """Send one advert from `source` to dst; False on any OSError (no address yet…)."""
        cmsg = [
            (socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, _PKTINFO6.pack(source.packed, self.ifindex))
        ]
        try:
            self._sock.sendmsg([payload], cmsg, 0, (str(dst), 0, 0, self.ifindex))
            return True
        except OSError as e:
            self.last_error = e
            log.debug("%s: send to %s failed: %s", self.ifname, dst, e)
            return False

    def _recv_one(self) -> Ipv6Packet | None:
        while True:
            try:
                data, ancdata, _flags, addr = self._sock.recvmsg(_MAX_DATAGRAM, _CMSG_SPACE6)
            except (BlockingIOError, InterruptedError):
                return None
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
                    log.debug("%s: recv error: %s", self.ifname, e)
                return None
            ifindex, dst, hops = None, None, -1
            for level, kind, value in ancdata:
                if level != socket.IPPROTO_IPV6:
                    continue
                if kind == socket.IPV6_PKTINFO and len(value) >= _PKTINFO6.size:
                    packed, ifindex = _PKTINFO6.unpack_from(value)
                    dst = ipaddress.IPv6Address(packed)
                elif kind == socket.IPV6_HOPLIMIT and len(value) >= _HOPLIMIT.size:
                    hops = _HOPLIMIT.unpack_from(value)[0]
            if ifindex is not None and ifindex != self.ifindex:
                self.drops[DropReason.UNKNOWN_INTERFACE] += 1
                continue
            src = ipaddress.IPv6Address(addr[0].split("%", 1)[0])
            if src == self.sender():
                self.drops[DropReason.OWN_PACKET] += 1
                continue
            return Ipv6Packet(src, dst or ipv6.GROUP, hops, PROTO_CARP, data)

    def recv_all(self) -> list[Ipv6Packet]:
        out = []
        for _ in range(_BATCH):
            pkt = self._recv_one()
            if pkt is None:
                break
            out.append(pkt)
        return out

    def close(self) -> None:
        self._sock.close()
