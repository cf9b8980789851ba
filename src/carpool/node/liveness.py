"""The fast detector's I/O (ha/liveness.py holds its logic): a UDP socket per address family on
port 6975, hellos to the partner's heartbeat address while active, queries to its address on
each other checked link when the standby grows suspicious, answers to the partner's queries.

Off (and said so in status) with `ha.liveness_ms = 0`, without a heartbeat link, or without
another checked link to ask on. Every datagram that is not the partner's, sealed with the
secret, is a counted drop; nothing is logged per packet.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections import Counter
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address

from .. import events
from ..config.ha import Config, Interface
from ..ha import liveness as lv
from ..ha.drops import DropError, DropReason

log = events.logger("carpool.liveness", events.Kind.TRANSITION)
Address = IPv4Address | IPv6Address
BATCH = 64  # datagrams read per wakeup at the most: a flood cannot hold the loop
CUT_LOG_EVERY = 60.0  # s: a cut heartbeat path is logged once a minute (counted each time)


def _partner(iface: Interface, role: str) -> Address | None:
    return iface.partner4(role) or iface.partner6(role)


def off_reason(cfg: Config) -> str:
    """Why the detector cannot run on this configuration ("" when it can)."""
    if cfg.liveness_ms == 0:
        return "ha.liveness_ms = 0"
    if not cfg.heartbeats:
        return "no heartbeat link"
    heartbeat = cfg.heartbeats[0].name
    if not any(i.check and i.name != heartbeat for i in cfg.interfaces):
        return "no other checked link to ask the partner on"
    return ""


class Liveness:
    def __init__(
        self,
        cfg: Config,
        on_gone: Callable[[str], None],
        link_up: Callable[[str], bool],
        now: Callable[[], float],
        advert_interval: float = 1.0,
    ):
        """on_gone(reason): the standby's verdict; link_up(name): the monitor's view;
        advert_interval: a fast profile's answers are waited for half an advert interval."""
        self.cfg, self.on_gone, self.link_up, self.now = cfg, on_gone, link_up, now
        self.off = off_reason(cfg)
        self.key = lv.liveness_key(cfg.secret)
        self.session = int.from_bytes(os.urandom(4), "big")
        wait = min(lv.QUERY_TIMEOUT, max(0.005, advert_interval / 2))
        self.detector = lv.Detector(
            cfg.liveness_ms / 1000, cfg.liveness_multiplier, _nonce, query_timeout=wait
        )
        self.drops: Counter[str] = Counter()
        self.errors = 0
        self.heartbeat = cfg.heartbeats[0] if cfg.heartbeats else None
        hb = self.heartbeat.name if self.heartbeat else ""
        self.paths = {
            i.name: a
            for i in cfg.interfaces
            if i.check and i.name != hb and (a := _partner(i, cfg.role)) is not None
        }
        self.hello_from = _partner(self.heartbeat, cfg.role) if self.heartbeat else None
        self.partner_at = {str(a): name for name, a in self.paths.items()}
        if self.hello_from is not None:
            self.partner_at[str(self.hello_from)] = hb
        self._socks: dict[int, socket.socket] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._cut_logged = float("-inf")

    # -- life cycle ------------------------------------------------------------------------
    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.off:
            log.info("fast detector off (%s): the advert timer alone decides", self.off)
            return
        self._loop = loop
        families = {a.version for a in [*self.paths.values(), self.hello_from] if a is not None}
        for version in sorted(families):
            family = socket.AF_INET if version == 4 else socket.AF_INET6
            sock = socket.socket(family, socket.SOCK_DGRAM)
            sock.setblocking(False)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(("0.0.0.0" if version == 4 else "::", lv.PORT))
            loop.add_reader(sock.fileno(), self._readable, sock)
            self._socks[version] = sock
        log.info(
            "fast detector on %s: hellos every %d ms, %d missed (or no carrier) and no answer "
            "on %s -> take over",
            self.heartbeat.name if self.heartbeat else "-",
            self.cfg.liveness_ms,
            self.cfg.liveness_multiplier,
            ", ".join(self.paths),
        )
        self._arm()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for sock in self._socks.values():
            if self._loop is not None:
                self._loop.remove_reader(sock.fileno())
            sock.close()
        self._socks = {}

    # -- inputs ----------------------------------------------------------------------------
    def on_transition(self, entry: dict) -> None:
        """The election changed state: the active unit sends hellos, a standby judges."""
        if self._loop is None:
            return
        self.detector.active(entry["new"] == "master", self.now())
        self._arm()

    def heard_advert(self, interface: str) -> None:
        """A valid partner advert: on the heartbeat link, a sign of life."""
        if self._loop is not None and self.heartbeat and interface == self.heartbeat.name:
            self.detector.heard(self.now())
            self._arm()

    def on_link(self, name: str, up: bool) -> None:
        if self._loop is None or up or not self.heartbeat or name != self.heartbeat.name:
            return
        self._do(self.detector.carrier_lost(self.now(), self._paths_up()))

    def _readable(self, sock: socket.socket) -> None:
        for _ in range(BATCH):
            try:
                data, source = sock.recvfrom(64)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.errors += 1
                break
            try:
                self._datagram(sock, data, source)
            except DropError as e:
                self.drops[e.reason.value] += 1
        self._arm()

    def _datagram(self, sock: socket.socket, data: bytes, source: tuple) -> None:
        path = self.partner_at.get(source[0].split("%")[0])
        if path is None:
            raise DropError(DropReason.NOT_PARTNER, source[0])
        frame = lv.decode(self.key, data)
        now = self.now()
        if frame.kind is lv.Kind.HELLO:
            if self.heartbeat is None or path != self.heartbeat.name:
                raise DropError(DropReason.UNKNOWN_INTERFACE, f"a hello from {path}")
            self.detector.hello(frame, now)
        elif frame.kind is lv.Kind.QUERY:
            answer = lv.Frame(lv.Kind.ANSWER, self.session, 0, frame.nonce)
            self._send(sock, lv.encode(self.key, answer), source[0])
        else:
            before = self.detector.state
            self._do(self.detector.answer(frame, now))
            if self.detector.state is not before and now - self._cut_logged >= CUT_LOG_EVERY:
                # hellos lost on the cable while adverts pass: a verdict each advert interval
                self._cut_logged = now
                log.warning("%s: nothing moves", self.detector.reason)

    # -- the clock and the effects ---------------------------------------------------------
    def _paths_up(self) -> tuple[str, ...]:
        return tuple(name for name in self.paths if self.link_up(name))

    def _arm(self) -> None:
        if self._loop is None:
            return
        deadline = self.detector.deadline()
        if self._timer is not None:
            if deadline is not None and self._timer.when() == deadline:
                return  # already set for it: no new handle per datagram
            self._timer.cancel()
            self._timer = None
        if deadline is not None:
            self._timer = self._loop.call_at(deadline, self._tick)

    def _tick(self) -> None:
        self._timer = None
        self._do(self.detector.tick(self.now(), self._paths_up()))

    def _do(self, effects: list[lv.Effect]) -> None:
        for effect in effects:
            match effect:
                case lv.SendHello(seq=seq):
                    frame = lv.Frame(lv.Kind.HELLO, self.session, seq)
                    self._send_to(lv.encode(self.key, frame), self.hello_from)
                case lv.SendQuery(path=path, nonce=nonce):
                    frame = lv.Frame(lv.Kind.QUERY, self.session, 0, nonce)
                    self._send_to(lv.encode(self.key, frame), self.paths.get(path))
                case lv.Gone(reason=reason):
                    log.warning("partner gone: %s", reason)
                    self.on_gone(reason)
        self._arm()

    def _send_to(self, data: bytes, address: Address | None) -> None:
        sock = self._socks.get(address.version) if address is not None else None
        if sock is not None and address is not None:
            self._send(sock, data, str(address))

    def _send(self, sock: socket.socket, data: bytes, address: str) -> None:
        try:
            sock.sendto(data, (address, lv.PORT))
        except OSError:  # a link down, no route yet: the verdict does not depend on one packet
            self.errors += 1

    def status(self, now: float) -> dict:
        d = self.detector
        return {
            "on": not self.off,
            "off_reason": self.off,
            "heartbeat": self.heartbeat.name if self.heartbeat else None,
            "interval_ms": self.cfg.liveness_ms,
            "multiplier": self.cfg.liveness_multiplier,
            "paths": list(self.paths),
            "state": d.state.value,
            "reason": d.reason,
            "heard_ago": None if d.last_heard is None else round(now - d.last_heard, 3),
            "counters": dict(d.counters),
            "drops": dict(self.drops),
            "send_errors": self.errors,
        }


def _nonce() -> bytes:
    return os.urandom(8)
