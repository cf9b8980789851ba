"""Async ICMP echo over a raw socket (root), no `ping` binary.

One `Pinger` owns one raw ICMP socket (and, from its first IPv6 address on, a raw ICMPv6 one)
and may have any number of pings in flight: each echo request carries the process's ident
(pid & 0xffff), a process-wide sequence number and a random per-Pinger cookie in the payload; a
reply counts only if all three match and it comes from the pinged address. ICMP_FILTER
(ICMP6_FILTER) keeps everything but echo replies out of the sockets; the kernel computes and
checks ICMPv6 checksums itself (RFC 3542 §3.1).

    pinger = Pinger()                       # in or outside a loop; raises OSError without root
    rtt = await pinger.ping("198.18.0.12", 0.9)          # seconds, or None after 0.9 s
    rtts = await pinger.ping_many(["198.18.0.12", "198.18.1.2"], 0.9)   # {address: rtt|None}
    pinger.close()

`ping(address, timeout, ifname=None)` is the one-shot form (its own socket). With ifname the
echo request leaves through that interface (IP_PKTINFO, like `ping -I`), whatever the routes say.
Errors never raise from ping(): a send error (ENETUNREACH, EPERM from a firewall…) gives None at
once and is kept in `Pinger.last_error`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import logging
import os
import socket
import struct
import time
from collections.abc import Callable

from ..family import IPV4, IPV6
from ..ha.ipv4 import internet_checksum

log = logging.getLogger("carpool.icmp")

ICMP_ECHO_REPLY, ICMP_ECHO = IPV4.echo_reply, IPV4.echo_request
ICMP6_ECHO, ICMP6_ECHO_REPLY = IPV6.echo_request, IPV6.echo_reply
SOL_RAW, ICMP_FILTER = 255, 1
ICMP6_FILTER = 1  # level IPPROTO_ICMPV6; a set bit blocks that type
IP_PKTINFO = 8
_PKTINFO = struct.Struct("i4s4s")
_PKTINFO6 = struct.Struct("16sI")
_ICMP = struct.Struct("!BBHHH")
_PAYLOAD_LEN = 56  # like ping(8)
_seq = itertools.count(int.from_bytes(os.urandom(2), "big"))


def _echo_request(ident: int, seq: int, payload: bytes) -> bytes:
    header = _ICMP.pack(ICMP_ECHO, 0, 0, ident, seq)
    csum = internet_checksum(header + payload)
    return _ICMP.pack(ICMP_ECHO, 0, csum, ident, seq) + payload


def _icmp6_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    try:
        blocked = bytearray(b"\xff" * 32)
        blocked[ICMP6_ECHO_REPLY >> 3] &= ~(1 << (ICMP6_ECHO_REPLY & 7)) & 0xFF
        sock.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, bytes(blocked))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class Pinger:
    """Concurrent ICMP echo sharing one raw socket."""

    def __init__(self) -> None:
        self.ident = os.getpid() & 0xFFFF
        self.last_error: OSError | None = None
        self._cookie = os.urandom(8)
        # the rest of the payload: made once (only the cookie is checked), as each interface's
        # index: a ping a second per link should cost its send and little else
        self._payload = self._cookie + os.urandom(_PAYLOAD_LEN - 8)
        self._ifindex: dict[str, int] = {}
        # seq -> (address pinged, when sent, told the rtt once a matching reply comes)
        self._pending: dict[int, tuple[str, float, Callable[[float], object]]] = {}
        self._waiting: set[asyncio.Future[float | None]] = set()  # ping()s, told None by close()
        self._loop: asyncio.AbstractEventLoop | None = None
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        try:
            # ICMP_FILTER: a set bit drops that ICMP type; pass only echo replies.
            sock.setsockopt(
                SOL_RAW, ICMP_FILTER, struct.pack("I", 0xFFFFFFFF & ~(1 << ICMP_ECHO_REPLY))
            )
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._sock6: socket.socket | None = None  # opened by the first IPv6 ping

    def fileno(self) -> int:
        return self._sock.fileno()

    def _sockets(self) -> list[tuple[socket.socket, bool]]:
        return [(self._sock, False)] + ([(self._sock6, True)] if self._sock6 is not None else [])

    def _attach(self, ipv6: bool = False) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if ipv6 and self._sock6 is None:
            self._sock6 = _icmp6_socket()  # OSError: the caller's ping says None
            if self._loop is loop:
                loop.add_reader(self._sock6.fileno(), self._on_readable, self._sock6, True)
        if self._loop is not loop:
            self._detach()
            for sock, six in self._sockets():
                loop.add_reader(sock.fileno(), self._on_readable, sock, six)
            self._loop = loop
        return loop

    def _detach(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            for sock, _six in self._sockets():
                try:
                    self._loop.remove_reader(sock.fileno())
                except (ValueError, RuntimeError):
                    pass

    def _on_readable(self, sock: socket.socket | None = None, ipv6: bool = False) -> None:
        sock = self._sock if sock is None else sock
        while True:
            try:
                data, address = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                log.debug("icmp recv error: %s", e)
                return
            now = time.monotonic()
            src = address[0].split("%", 1)[0]
            if ipv6:  # no header; the kernel checked the checksum
                icmp, reply = data, ICMP6_ECHO_REPLY
            else:
                if len(data) < 20:
                    continue
                icmp, reply = data[(data[0] & 0x0F) * 4 :], ICMP_ECHO_REPLY
            if len(icmp) < _ICMP.size + 8:
                continue
            kind, code, _csum, ident, seq = _ICMP.unpack_from(icmp)
            if kind != reply or code != 0 or ident != self.ident:
                continue
            entry = self._pending.get(seq)
            if entry is None:
                continue
            pinged, sent, told = entry
            if src != pinged or icmp[_ICMP.size : _ICMP.size + 8] != self._cookie:
                continue
            if not ipv6 and internet_checksum(icmp) != 0:
                continue
            del self._pending[seq]
            told(now - sent)

    async def ping(self, address: str, timeout: float, ifname: str | None = None) -> float | None:
        """One echo (ICMP or ICMPv6, as the address is); the round-trip time in seconds, or
        None if no reply within timeout."""
        fut: asyncio.Future[float | None] = asyncio.get_running_loop().create_future()

        def told(rtt: float) -> None:
            if not fut.done():
                fut.set_result(rtt)

        seq = self.echo(address, told, ifname)
        if seq is None:
            return None
        self._waiting.add(fut)
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            return None
        finally:
            self._waiting.discard(fut)
            self._pending.pop(seq, None)

    def echo(
        self, address: str, told: Callable[[float], object], ifname: str | None = None
    ) -> int | None:
        """One echo sent now, `told(rtt)` in the loop when its reply comes; no task, future or
        timer (a round a second per link should cost its send and little else): the caller
        decides when it has waited long enough and calls `forget(seq)`. Returns the echo's
        seq, or None when it could not be sent (`last_error`)."""
        ip = ipaddress.ip_address(address)
        address, ipv6 = str(ip), ip.version == 6
        try:
            self._attach(ipv6)
        except OSError as e:
            self.last_error = e
            return None
        seq = next(_seq) & 0xFFFF
        while seq in self._pending:
            seq = next(_seq) & 0xFFFF
        payload = self._payload
        if ipv6:  # the kernel fills the checksum in
            packet = _ICMP.pack(ICMP6_ECHO, 0, 0, self.ident, seq) + payload
        else:
            packet = _echo_request(self.ident, seq, payload)
        self._pending[seq] = (address, time.monotonic(), told)
        try:
            self._send(packet, address, ifname, ipv6)
        except OSError as e:
            self._pending.pop(seq, None)
            self.last_error = e
            log.debug("ping %s: send failed: %s", address, e)
            return None
        return seq

    def forget(self, seq: int) -> bool:
        """Stop waiting for echo `seq`; True if its reply had not come."""
        return self._pending.pop(seq, None) is not None

    def _send(self, packet: bytes, address: str, ifname: str | None, ipv6: bool) -> None:
        sock = self._sock6 if ipv6 else self._sock
        assert sock is not None  # _attach opened it
        if ifname is None:
            sock.sendto(packet, (address, 0))
            return
        index = self._ifindex.get(ifname)
        if index is None:
            index = self._ifindex[ifname] = socket.if_nametoindex(ifname)
        if ipv6:
            info = (socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, _PKTINFO6.pack(b"\0" * 16, index))
        else:
            info = (socket.IPPROTO_IP, IP_PKTINFO, _PKTINFO.pack(index, b"\0" * 4, b"\0" * 4))
        try:
            sock.sendmsg([packet], [info], 0, (address, 0))
        except OSError:
            self._ifindex.pop(ifname, None)  # the interface may be a new one by that name
            raise

    async def ping_many(
        self, addresses, timeout: float, ifname: str | None = None
    ) -> dict[str, float | None]:
        """Ping every address at once; {address: rtt or None}."""
        addresses = list(addresses)
        rtts = await asyncio.gather(*(self.ping(a, timeout, ifname) for a in addresses))
        return dict(zip(addresses, rtts, strict=False))

    def close(self) -> None:
        for fut in list(self._waiting):  # a ping() waiting says None at once
            if not fut.done():
                fut.set_result(None)
        self._pending.clear()
        self._detach()
        self._loop = None
        for sock, _six in self._sockets():
            sock.close()

    async def __aenter__(self) -> Pinger:
        return self

    async def __aexit__(self, *exc) -> None:
        self.close()

    def __enter__(self) -> Pinger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


async def ping(address: str, timeout: float, ifname: str | None = None) -> float | None:
    """One-shot ICMP echo with a socket of its own: rtt in seconds, or None."""
    with Pinger() as pinger:
        return await pinger.ping(address, timeout, ifname)
