"""The fast detector's I/O (ha/liveness.py holds its logic): a UDP socket per address family on
port 6975, hellos to the partner's heartbeat address while active, queries to its address on
each other checked link when the standby grows suspicious, answers to the partner's queries.

The hellos and the answers come from a thread of their own (`Heart`), not from the event loop:
a loop that stalls for a second (a big configuration, a loaded machine) must not read as a dead
unit to a partner that judges in 300 ms — the advert timer and the watchdog deal with a hung
loop as before. What stops the thread too (power loss, a killed or frozen process, a hung
kernel) is what the detector is for.

Off (and said so in status) with `ha.liveness_ms = 0`, without a heartbeat link, or without
another checked link to ask on. Every datagram that is not the partner's, sealed with the
secret, is a counted drop; nothing is logged per packet.
"""

from __future__ import annotations

import asyncio
import os
import select
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address

from .. import events
from ..config.ha import Config, Interface
from ..ha import liveness as lv
from ..ha.drops import DropError, DropReason
from .heartbeat_read import HeartbeatRead
from .links import NEVER, CarrierPolls, LinkMonitor
from .sched import realtime
from .threads import name_os_thread

log = events.logger("carpool.liveness", events.Kind.TRANSITION)
Address = IPv4Address | IPv6Address
BATCH = 64  # datagrams read per wakeup at the most: a flood cannot hold the loop
CUT_LOG_EVERY = 60.0  # s: a cut heartbeat path is logged once a minute (counted each time)
RESTART = 0.1  # s before the thread starts over after a fault of its own
OFF_INTERVAL_MS = 100


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


def link_poll(cfg: Config, most: float, heart: bool = True) -> float:
    """Seconds between reads of a late link's carrier: `most`, or each hello's interval when
    hellos come more often (the reads ride the Heart's wake-ups: no wake-up of their own).
    Without a running Heart (`heart` False: UDP 6975 taken) the loop reads them: `most`."""
    if not heart or off_reason(cfg):
        return most
    return min(most, cfg.liveness_ms / 1000)


def automatic(cfg: Config) -> bool:
    """ha.liveness_ms and liveness_multiplier unset: config.document.LIVENESS_AUTO."""
    ha = cfg.document.ha if cfg.document is not None else None
    return ha is not None and ha.liveness_ms is None and ha.liveness_multiplier is None


def settings(cfg: Config, advert_interval: float) -> tuple:
    """What a Liveness is built from: a new version that changes it needs a new one."""
    return (
        off_reason(cfg),
        automatic(cfg),
        cfg.liveness_ms,
        cfg.liveness_multiplier,
        advert_interval,
        cfg.secret,
        cfg.rt_priority,
        tuple(i.name for i in cfg.heartbeats),
        tuple((i.name, i.check, _partner(i, cfg.role)) for i in cfg.interfaces),
    )


class Heart:
    """The thread that reads the sockets, answers queries at once, sends the hellos while the
    unit is active, and hands hellos and answers to the loop (`deliver(frame, path)`)."""

    def __init__(
        self,
        socks: list[socket.socket],
        key: bytes,
        session: int,
        interval: float,
        hello_to: Address | None,
        partner_at: dict[str, str],
        deliver: Callable[[lv.Frame, str], object],
    ):
        self.socks, self.key, self.session, self.interval = socks, key, session, interval
        self.hello_to, self.partner_at, self.deliver = hello_to, partner_at, deliver
        self.drops: Counter[str] = Counter()
        self.errors = 0
        self.faults = 0  # the thread's own failures (it starts over)
        self.hellos_sent = 0
        self.answered = 0
        self.hellos = 0
        self.replayed = 0
        self.active = False
        # the last hello taken (monotonic, the loop's clock); while `quiet` the loop reads it
        # when its own deadline comes instead of being woken by every hello
        self.last_hello: float | None = None
        self.quiet = False
        # while quiet, the silence is judged here: `on_silence()` once `silence` s pass after
        # the last hello (or the loop's last sign of life, `heard_at`) with nothing new; the
        # loop's own timer would turn every few hundred ms only to find a hello had come
        self.silence: float | None = None
        self.heard_at = NEVER
        self.on_silence: Callable[[], object] | None = None
        self._silence_told: float | None = None
        self.polls: CarrierPolls | None = None  # the late links' carrier, read on our wake-ups
        # SCHED_RR like the loop (node/sched.py): a normal task waits half a second for a CPU
        # on a busy machine, and a partner judges half a second of silence a dead unit
        self.rt_priority = 0
        self._peer: tuple[int, int] | None = None  # (session, seq) of the last hello taken
        self._seq = 0
        self._stopped = threading.Event()  # (an event: it also ends the wait after a fault)
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread = threading.Thread(target=self._run, name="carpool-heart", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def set_active(self, on: bool) -> None:
        self.active = on
        self._wake()

    def stop(self) -> None:
        self._stopped.set()
        self._wake()
        self._thread.join(2.0)
        self._wake_r.close()
        self._wake_w.close()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b".")
        except OSError:
            pass

    def _run(self) -> None:
        """A fault must not end the thread: a partner would judge this unit gone (it did, once
        a second, before its detector waited for a first hello). Counted, logged once a minute,
        and the thread starts over a little later."""
        name_os_thread()
        realtime(self.rt_priority, "the liveness thread")
        logged = NEVER
        while not self._stopped.is_set():
            try:
                self._serve()
                return
            except Exception:
                self.faults += 1
                if time.monotonic() - logged >= CUT_LOG_EVERY:
                    logged = time.monotonic()
                    log.exception("the liveness thread failed; it starts over in %g s", RESTART)
                self._stopped.wait(RESTART)

    def _serve(self) -> None:
        next_hello = time.monotonic()
        # registered once: each wake-up at idle is a cost (select() would rebuild its sets)
        poller = select.poll()
        by_fd = {}
        for sock in [*self.socks, self._wake_r]:
            poller.register(sock, select.POLLIN)
            by_fd[sock.fileno()] = sock
        hello_to = str(self.hello_to) if self.hello_to is not None else None
        hello_sock = self._sock_for(hello_to) if hello_to is not None else None
        key, session, hello = self.key, self.session, lv.hello
        while not self._stopped.is_set():
            now = time.monotonic()
            if not self.active:
                next_hello, timeout = now, None  # asleep until a datagram or a wake
            else:
                timeout = max(0.0, next_hello - now)
            quiet_for = self._watch_silence(now)
            if quiet_for is not None:
                timeout = quiet_for if timeout is None else min(timeout, quiet_for)
            polls = self.polls
            if polls is not None and (wait := polls.wait(now)) is not None:
                timeout = wait if timeout is None else min(timeout, wait)
            try:
                ready = poller.poll(None if timeout is None else timeout * 1000)
            except (OSError, ValueError):
                return  # the sockets were closed under us: the unit is stopping
            for fd, mask in ready:
                if mask & select.POLLNVAL:
                    return  # closed under us: the unit is stopping
                sock = by_fd[fd]
                if sock is self._wake_r:
                    self._wake_r.recv(64)
                else:
                    self._read(sock)
            now = time.monotonic()
            if self.active and now >= next_hello and hello_to and hello_sock is not None:
                self._seq += 1
                self.hellos_sent += 1
                self.send(hello(key, session, self._seq), hello_to, hello_sock)
                next_hello = max(next_hello + self.interval, now)
            if polls is not None:
                polls.run(now)

    def _watch_silence(self, now: float) -> float | None:
        """Seconds until the silence is due, or until it is told again (None: not watching)."""
        if not self.quiet or self.silence is None or self.on_silence is None:
            return None
        last = max(self.last_hello or NEVER, self.heard_at)
        if now < last + self.silence:
            return last + self.silence - now
        told = self._silence_told
        if told is None or told < last or now - told >= self.silence:
            # once per silence (the loop takes it from there), again if it is still quiet
            self._silence_told = now
            try:
                self.on_silence()
            except RuntimeError:  # the loop is closed: the unit is stopping
                pass
        return self.silence

    def _read(self, sock: socket.socket) -> None:
        for _ in range(BATCH):
            try:
                data, source = sock.recvfrom(64)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.errors += 1
                return
            try:
                address = source[0].split("%")[0]
                path = self.partner_at.get(address)
                if path is None:
                    raise DropError(DropReason.NOT_PARTNER, address)
                frame = lv.decode(self.key, data)
                if frame.kind is lv.Kind.QUERY:
                    answer = lv.Frame(lv.Kind.ANSWER, self.session, 0, frame.nonce)
                    self.answered += 1
                    self.send(lv.encode(self.key, answer), address, sock)
                elif frame.kind is lv.Kind.HELLO and not self._fresh(frame):
                    self.replayed += 1
                elif frame.kind is lv.Kind.HELLO and self.quiet:
                    self.last_hello = time.monotonic()  # read by the loop at its deadline
                else:
                    try:
                        self.deliver(frame, path)
                    except RuntimeError:  # the loop is closed: the unit is stopping
                        return
            except DropError as e:
                self.drops[e.reason.value] += 1

    def _fresh(self, hello: lv.Frame) -> bool:
        """A hello's sequence rises within its session (a daemon start draws a new one)."""
        peer = self._peer
        if peer is not None and hello.session == peer[0] and hello.seq <= peer[1]:
            return False
        self._peer = (hello.session, hello.seq)
        self.hellos += 1
        return True

    def _sock_for(self, address: str) -> socket.socket | None:
        want = socket.AF_INET6 if ":" in address else socket.AF_INET
        return next((s for s in self.socks if s.family == want), None)

    def send(self, data: bytes, address: str, sock: socket.socket | None = None) -> None:
        if sock is None:
            sock = self._sock_for(address)
        if sock is None:
            return
        try:
            sock.sendto(data, (address, lv.PORT))
        except OSError:  # a link down, no route yet: the verdict does not hang on one packet
            self.errors += 1


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
        self.settings = settings(cfg, advert_interval)
        self.off = off_reason(cfg)
        self.automatic = automatic(cfg)
        self.key = lv.liveness_key(cfg.secret)
        self.session = int.from_bytes(os.urandom(4), "big")
        self.advert_interval = advert_interval
        wait = min(lv.QUERY_TIMEOUT, max(0.005, advert_interval / 2))
        self.detector = lv.Detector(
            # switched off (0): a detector that never runs, there for status
            (cfg.liveness_ms or OFF_INTERVAL_MS) / 1000,
            cfg.liveness_multiplier,
            _nonce,
            query_timeout=wait,
            hello_clock=False,  # the Heart sends them
        )
        self.drops: Counter[str] = Counter()
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
        self.heart: Heart | None = None
        self.heartbeat_read: HeartbeatRead | None = None  # a fast profile's standby
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._cut_logged = NEVER

    # -- life cycle ------------------------------------------------------------------------
    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.off:
            log.info("fast detector off (%s): the advert timer alone decides", self.off)
            return
        self._loop = loop
        families = {a.version for a in [*self.paths.values(), self.hello_from] if a is not None}
        try:
            for version in sorted(families):
                family = socket.AF_INET if version == 4 else socket.AF_INET6
                sock = socket.socket(family, socket.SOCK_DGRAM)
                self._socks[version] = sock
                sock.setblocking(False)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(("0.0.0.0" if version == 4 else "::", lv.PORT))
        except OSError as e:  # the port taken, no IPv6: the election runs on without it
            self.off = f"cannot listen on UDP {lv.PORT}: {e.strerror or e}"
            log.error("fast detector off (%s): the advert timer alone decides", self.off)
            self.close()
            self._loop = None
            return
        self.heart = Heart(
            list(self._socks.values()),
            self.key,
            self.session,
            self.cfg.liveness_ms / 1000,
            self.hello_from,
            self.partner_at,
            lambda frame, path: loop.call_soon_threadsafe(self._delivered, frame, path),
        )
        self.heart.silence = self.detector.detect_time
        self.heart.rt_priority = self.cfg.rt_priority
        self.heart.on_silence = lambda: loop.call_soon_threadsafe(self._tick)
        self.heart.start()
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
        if self.heartbeat_read is not None:
            self.heartbeat_read.close()
        if self.heart is not None:
            polls = self.heart.polls
            self.heart.stop()  # joined first: from now on only the loop reads the links
            if polls is not None:
                polls.monitor.delegate(None)  # the loop's timer reads them again
        for sock in self._socks.values():
            sock.close()
        self._socks = {}
        self._loop = None  # what the Heart handed the loop before it stopped is not acted on

    # -- inputs ----------------------------------------------------------------------------
    def on_transition(self, entry: dict) -> None:
        """The election changed state: the active unit sends hellos, a standby judges."""
        self.set_active(entry["new"] == "master")

    def set_active(self, active: bool) -> None:
        if self._loop is None:
            return
        self.detector.active(active, self.now())
        if self.heart is not None:
            self.heart.set_active(active)
        if self.heartbeat_read is not None:
            self.heartbeat_read.set_standby(not active)
        self._arm()

    def read_carriers(self, monitor: LinkMonitor) -> bool:
        """Hand the monitor's late-link reads to the Heart's wake-ups (False: no Heart). Adverts
        that come more often than those reads: the standby also reads the heartbeat link
        whenever its adverts are late (node/heartbeat_read.py)."""
        loop, heart = self._loop, self.heart
        if loop is None or heart is None:
            return False
        polls = monitor.delegate(lambda name: loop.call_soon_threadsafe(monitor.recheck, name))
        heart.polls = polls
        heart._wake()  # its sleep now ends at the first read due
        every = monitor.poll_interval
        if self.heartbeat is not None and every and self.advert_interval < every:
            read = HeartbeatRead(monitor, self.heartbeat.name, self.advert_interval, loop)
            read.set_standby(not heart.active)
            self.heartbeat_read = read
        return True

    def heard_advert(self, interface: str) -> None:
        """A valid partner advert: on the heartbeat link, a sign of life."""
        if self._loop is not None and self.heartbeat and interface == self.heartbeat.name:
            now = self.now()
            self.detector.heard(now, hello=False)
            if self.heartbeat_read is not None:
                self.heartbeat_read.heard(now)
            self._arm()

    def on_link(self, name: str, up: bool) -> None:
        if self._loop is None or up or not self.heartbeat or name != self.heartbeat.name:
            return
        self._do(self.detector.carrier_lost(self.now(), self._paths_up()))

    def _delivered(self, frame: lv.Frame, path: str) -> None:
        """A hello or an answer from the partner, read by the Heart."""
        if self._loop is None:
            return
        now = self.now()
        if frame.kind is lv.Kind.HELLO:
            if self.heartbeat is None or path != self.heartbeat.name:
                self.drops[DropReason.UNKNOWN_INTERFACE.value] += 1
                return
            self.detector.heard(now)  # (the Heart refused replays)
        else:
            before = self.detector.state
            self._do(self.detector.answer(frame, now))
            if self.detector.state is not before and now - self._cut_logged >= CUT_LOG_EVERY:
                # hellos lost on the cable while adverts pass: a verdict each advert interval
                self._cut_logged = now
                log.warning("%s: nothing moves", self.detector.reason)
        self._arm()

    # -- the clock and the effects ---------------------------------------------------------
    def _paths_up(self) -> tuple[str, ...]:
        return tuple(name for name in self.paths if self.link_up(name))

    def _arm(self) -> None:
        if self._loop is None:
            return
        deadline = self.detector.deadline()
        heart = self.heart
        if heart is not None:  # alive: the Heart takes the hellos and judges the silence
            heart.heard_at = self.detector.last_heard or NEVER
            heart.quiet = self.detector.state is lv.State.ALIVE
            if heart.quiet and heart.on_silence is not None:
                deadline = None
        if self._timer is not None:
            if deadline is not None and self._timer.when() == deadline:
                return  # already set for it: no new handle per datagram
            self._timer.cancel()
            self._timer = None
        if deadline is not None:
            self._timer = self._loop.call_at(deadline, self._tick)

    def _tick(self) -> None:
        self._timer = None
        if self._loop is None:
            return
        taken = self.heart.last_hello if self.heart is not None else None
        if taken is not None and taken > (self.detector.last_heard or NEVER):
            self.detector.heard(taken)  # hellos the Heart took while quiet
        self._do(self.detector.tick(self.now(), self._paths_up()))

    def _do(self, effects: list[lv.Effect]) -> None:
        for effect in effects:
            match effect:
                case lv.SendQuery(path=path, nonce=nonce):
                    frame = lv.Frame(lv.Kind.QUERY, self.session, 0, nonce)
                    self._send_to(lv.encode(self.key, frame), self.paths.get(path))
                case lv.Gone(reason=reason):
                    log.warning("partner gone: %s", reason)
                    self.on_gone(reason)
        self._arm()

    def _send_to(self, data: bytes, address: Address | None) -> None:
        if address is not None and self.heart is not None:
            self.heart.send(data, str(address))  # a UDP send is safe from any thread

    def status(self, now: float) -> dict:
        d = self.detector
        heard = max(
            (t for t in (d.last_heard, self.heart.last_hello if self.heart else None) if t),
            default=None,
        )
        return {
            "on": not self.off,
            "off_reason": self.off,
            "heartbeat": self.heartbeat.name if self.heartbeat else None,
            "interval_ms": self.cfg.liveness_ms,
            "automatic": self.automatic,
            "multiplier": self.cfg.liveness_multiplier,
            "paths": list(self.paths),
            "state": d.state.value,
            "reason": d.reason,
            "heard_ago": None if heard is None else round(now - heard, 3),
            "counters": dict(d.counters)
            | (
                {
                    "hellos_sent": h.hellos_sent,
                    "hellos": h.hellos,
                    "replayed": h.replayed,
                    "answered": h.answered,
                }
                if (h := self.heart)
                else {}
            ),
            "drops": dict(self.drops + (self.heart.drops if self.heart else Counter())),
            "send_errors": self.heart.errors if self.heart else 0,
            "thread_faults": self.heart.faults if self.heart else 0,
        }


def _nonce() -> bytes:
    return os.urandom(8)
