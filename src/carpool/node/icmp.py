"""Async ICMP echo over a raw socket (root), no `ping` binary.

One `Pinger` owns one raw ICMP socket and may have any number of pings in flight: each echo
request carries the process's ident (pid & 0xffff), a process-wide sequence number and a random
per-Pinger cookie in the payload; a reply counts only if all three match and it comes from the
pinged address. An ICMP_FILTER keeps everything but echo replies out of the socket.

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

from ..ha.ipv4 import internet_checksum

log = logging.getLogger("carpool.icmp")

ICMP_ECHO_REPLY, ICMP_ECHO = 0, 8
SOL_RAW, ICMP_FILTER = 255, 1
IP_PKTINFO = 8
_PKTINFO = struct.Struct("i4s4s")
_ICMP = struct.Struct("!BBHHH")
_PAYLOAD_LEN = 56  # like ping(8)
_seq = itertools.count(int.from_bytes(os.urandom(2), "big"))


def _echo_request(ident: int, seq: int, payload: bytes) -> bytes:
    header = _ICMP.pack(ICMP_ECHO, 0, 0, ident, seq)
    csum = internet_checksum(header + payload)
    return _ICMP.pack(ICMP_ECHO, 0, csum, ident, seq) + payload


class Pinger:
    """Concurrent ICMP echo sharing one raw socket."""

    def __init__(self) -> None:
        self.ident = os.getpid() & 0xFFFF
        self.last_error: OSError | None = None
        self._cookie = os.urandom(8)
        self._pending: dict[int, tuple[str, float, asyncio.Future]] = {}
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

    def fileno(self) -> int:
        return self._sock.fileno()

    def _attach(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            if self._loop is not None and not self._loop.is_closed():
                try:
                    self._loop.remove_reader(self._sock.fileno())
                except (ValueError, RuntimeError):
                    pass
            loop.add_reader(self._sock.fileno(), self._on_readable)
            self._loop = loop
        return loop

    def _on_readable(self) -> None:
        while True:
            try:
                data, (src, _port) = self._sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                log.debug("icmp recv error: %s", e)
                return
            now = time.monotonic()
            if len(data) < 20:
                continue
            ihl = (data[0] & 0x0F) * 4
            icmp = data[ihl:]
            if len(icmp) < _ICMP.size + 8:
                continue
            kind, code, _csum, ident, seq = _ICMP.unpack_from(icmp)
            if kind != ICMP_ECHO_REPLY or code != 0 or ident != self.ident:
                continue
            entry = self._pending.get(seq)
            if entry is None:
                continue
            address, sent, fut = entry
            if src != address or icmp[_ICMP.size : _ICMP.size + 8] != self._cookie:
                continue
            if internet_checksum(icmp) != 0:
                continue
            if not fut.done():
                fut.set_result(now - sent)

    async def ping(self, address: str, timeout: float, ifname: str | None = None) -> float | None:
        """One echo; the round-trip time in seconds, or None if no reply within timeout."""
        address = str(ipaddress.IPv4Address(address))
        loop = self._attach()
        seq = next(_seq) & 0xFFFF
        while seq in self._pending:
            seq = next(_seq) & 0xFFFF
        payload = self._cookie + os.urandom(_PAYLOAD_LEN - 8)
        packet = _echo_request(self.ident, seq, payload)
        fut = loop.create_future()
        self._pending[seq] = (address, time.monotonic(), fut)
        try:
            try:
                if ifname is None:
                    self._sock.sendto(packet, (address, 0))
                else:
                    cmsg = [
                        (
                            socket.IPPROTO_IP,
                            IP_PKTINFO,
                            _PKTINFO.pack(socket.if_nametoindex(ifname), b"\0" * 4, b"\0" * 4),
                        )
                    ]
                    self._sock.sendmsg([packet], cmsg, 0, (address, 0))
            except OSError as e:
                self.last_error = e
                log.debug("ping %s: send failed: %s", address, e)
                return None
            try:
                return await asyncio.wait_for(fut, timeout)
            except TimeoutError:
                return None
        finally:
            self._pending.pop(seq, None)

    async def ping_many(
        self, addresses, timeout: float, ifname: str | None = None
    ) -> dict[str, float | None]:
        """Ping every address at once; {address: rtt or None}."""
        addresses = list(addresses)
        rtts = await asyncio.gather(*(self.ping(a, timeout, ifname) for a in addresses))
        return dict(zip(addresses, rtts, strict=False))

    def close(self) -> None:
        for _address, _sent, fut in list(self._pending.values()):
            if not fut.done():
                fut.set_result(None)
        self._pending.clear()
        if self._loop is not None and not self._loop.is_closed():
            try:
                self._loop.remove_reader(self._sock.fileno())
            except (ValueError, RuntimeError):
                pass
        self._loop = None
        self._sock.close()

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
