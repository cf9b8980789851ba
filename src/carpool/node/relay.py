"""Adverts over the sync channel (TCP 6973) while no advert path carries them.

When every advert path drops the partner's adverts in one direction (a filter on IP protocol
112, multicast eaten on the LAN with the heartbeat cable out), the unit that hears nothing
takes over while the partner still serves: two active units that still talk on 6973. So each
unit keeps one authenticated 6973 connection to its partner and, while it hears no advert on
any path, asks over it for the partner's adverts ("relay", want true). The partner then posts
each advert it sends (demote, preference, bow-out, and the round's counter) on that connection
as well, and they feed the election like any advert: the unit stays standby, or, active,
yields to a better ranked partner at once. Nothing flows while adverts arrive on a path (want false), so a healthy pair
pays nothing; a silent partner (dead, frozen, cut off) relays nothing either, so a takeover is
never delayed. The session's HMAC and sequence numbers authenticate every relayed advert.

A connection holds back what it could not deliver while a path was down and hands it over
after the heal, so a relayed advert may be old news: the round's counter (the one its adverts
carried on the paths) tells the daemon whether a path brought that round or a newer one
already (node/advert.py `relayed`). An older release relays no counter; its adverts count
only while we ask.

The doctor uses the same connection: a run asks the partner ("doctor", id) for its report of
the run's probes, which then arrives here even when no advert path carries it back, so the
findings can say which direction of each path drops (node/doctor.py).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import socket
import struct
import termios
import time
from collections.abc import Callable

from .. import events
from ..config import syncproto as sp
from .limits import RateLimitedLog
from .sync import RETRY, Channel, SyncRefused, SyncService, cancel_requested

log = events.logger("carpool.relay", events.Kind.SYNC)
# Advert intervals without an advert on any path before we ask for relays. Asked for, the
# partner relays its state at once, so with the daemon's check every half interval the relay
# arrives by 1.75 intervals, well before master-down (3 intervals).
WANT_AFTER = 1.25
RELAY_SLACK = 0.01  # s after the newest advert grows too old: then `want` has turned
# Without a connection, the next attempt comes RETRY s after the last; while adverts are wanted
# (no path carries them) this soon: a link back from a fault must not leave two active units
# for the rest of a RETRY (a chaos campaign: 0.94 s of two holders after a link came back)
HURRY = 0.1


def keep_alive(ch: Channel) -> None:
    """A relay connection is idle for as long as adverts arrive on a path, and its partner may
    vanish without a FIN (power loss, a path cut): TCP keepalive declares it dead within ~5 s
    at no cost to the loop, so a partner that comes back is reached on a fresh connection."""
    sock = ch.writer.get_extra_info("socket")
    if sock is None:
        return
    for level, option, value in (
        (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
        (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 2),
        (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1),
        (socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3),
        (socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 5000),
    ):
        try:
            sock.setsockopt(level, option, value)
        except OSError:
            pass


def unacked(ch: Channel) -> int:
    """Bytes sent on the connection that the partner has not acknowledged (SIOCOUTQ): on a
    working path they are acked within a round trip; left over, the connection retransmits on
    a timer that backs off to seconds while a path is down, and keeps waiting it out after the
    path is back."""
    sock = ch.writer.get_extra_info("socket")
    if sock is None:
        return 0
    try:
        return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, bytes(4)))[0]
    except OSError:
        return 0


def wants_relay(last_heard: list[float | None], now: float, advert_interval: float) -> bool:
    """Ask for relayed adverts when no path has carried one for WANT_AFTER intervals."""
    recent = [t for t in last_heard if t is not None]
    return not recent or now - max(recent) > WANT_AFTER * advert_interval


def later_check(when: float, heard: float, advert_interval: float) -> float | None:
    """The relay check's new time after an advert heard at `heard`, when it moves the check (due
    at `when`) by more than a quarter interval; None otherwise. Pushed back with each advert
    round, the check never fires while adverts come: it used to wake an idle standby's loop
    once an advert interval (50 times a second in a fast profile) to find one had come."""
    due = heard + WANT_AFTER * advert_interval + RELAY_SLACK
    return due if due - when > advert_interval / 4 else None


def parse_advert(msg: dict) -> tuple[int, int, bool, int | None]:
    """(demote, preference, bow_out, counter) of a relayed advert (counter None: an older
    release's); ValueError names a bad field."""
    demote, preference, bow_out = msg.get("demote"), msg.get("preference"), msg.get("bow_out")
    counter = msg.get("counter")
    if type(demote) is not int or not 0 <= demote <= 255:
        raise ValueError(f"demote: {demote!r}")
    if type(preference) is not int or not 0 <= preference <= 65535:
        raise ValueError(f"preference: {preference!r}")
    if type(bow_out) is not bool:
        raise ValueError(f"bow_out: {bow_out!r}")
    if counter is not None and (type(counter) is not int or not 0 <= counter < 2**64):
        raise ValueError(f"counter: {counter!r}")
    return demote, preference, bow_out, counter


def _advert_message(demote: int, preference: int, bow_out: bool, counter: int | None) -> dict:
    msg = {"type": "advert", "demote": demote, "preference": preference, "bow_out": bow_out}
    if counter is not None:
        msg["counter"] = counter
    return msg


class AdvertRelay:
    def __init__(
        self,
        sync: SyncService,
        on_advert: Callable[[int, int, bool, int | None], None],
        state: Callable[[], str],
        advert: Callable[[], tuple[int, int, int | None] | None],
    ):
        """advert(): (demote, preference, the last round's counter) of our advert while we are
        active, else None."""
        self.sync, self.on_advert, self.state, self.advert = sync, on_advert, state, advert
        self.want = False
        self._asked: tuple[bool, str] | None = None  # what the partner last heard from us
        self.subscribers: dict[Channel, dict] = {}  # the partner's connections to us
        self.client: Channel | None = None
        self.connected_since: float | None = None
        self.last_heard: float | None = None  # monotonic, a relayed advert
        self.counters: collections.Counter = collections.Counter()
        # The doctor's, set by the daemon: report_for(id, send) sends (or, rate-limited, drops)
        # our report of the partner's run id; on_report(body) takes the partner's report.
        self.report_for: Callable[[str, Callable[[dict], None]], None] | None = None
        self.on_report: Callable[[dict], None] | None = None
        self._errors = RateLimitedLog(log)
        self._hurry = asyncio.Event()  # adverts wanted without a connection: retry soon
        self._redial = False  # the connection was ended as stuck: connect again at once
        sync.relay = self

    # -- the side that relays its adverts ----------------------------------------------------
    def subscribe(self, ch: Channel, msg: dict) -> None:
        sub = {"want": msg.get("want") is True, "state": str(msg.get("state", "?"))[:16]}
        if ch not in self.subscribers:
            keep_alive(ch)
        self.subscribers[ch] = sub
        current = self.advert() if sub["want"] else None
        if current is not None:  # not the next advert: the asker's master-down is running
            sent = ch.post(_advert_message(current[0], current[1], False, current[2]))
            self.counters["relayed" if sent else "relay_dropped"] += 1

    def doctor(self, ch: Channel, msg: dict) -> None:
        """The partner's doctor asks for our report of its probes: the doctor answers when its
        probes are in, back on this connection."""
        pid = msg.get("id")
        if not isinstance(pid, str) or not 0 < len(pid) <= 32 or self.report_for is None:
            self.counters["doctor_garbage"] += 1
            return

        def send(body: dict) -> None:
            if ch.post({"type": "doctor-report", "report": body}):
                self.counters["doctor_reports_sent"] += 1

        self.report_for(pid, send)

    def forget(self, ch: Channel) -> None:
        self.subscribers.pop(ch, None)

    def partner_wants(self) -> dict | None:
        """The partner's ask ({"want", "state"}) if it wants our adverts, else None."""
        return next((s for s in self.subscribers.values() if s["want"]), None)

    def send(self, demote: int, preference: int, bow_out: bool, counter: int | None) -> None:
        """With every advert round we send: relayed to a partner that asked for it."""
        for ch, sub in list(self.subscribers.items()):
            if sub["want"]:
                sent = ch.post(_advert_message(demote, preference, bow_out, counter))
                self.counters["relayed" if sent else "relay_dropped"] += 1

    # -- the side that asks --------------------------------------------------------------------
    def ask(self, want: bool) -> None:
        """Called every advert interval with whether we hear the partner on no path."""
        self.want = want
        client = self.client
        if want and client is None:
            self._hurry.set()
        wanted = (want, self.state())
        if client is None or wanted == self._asked:
            return
        if want and unacked(client):
            # what we said last is still unacknowledged (a path was down, the connection
            # backed off): the ask would wait behind it, maybe for seconds. A new connection
            # asks at once; run() sees this one end.
            self.counters["redialed"] += 1
            self._redial = True
            client.close()
            return
        if client.post({"type": "relay", "want": want, "state": wanted[1]}):
            self._asked = wanted

    def ask_doctor(self, pid: str) -> bool:
        """Ask the partner for its report of doctor run `pid` over 6973 (False: no connection,
        or a partner too old to answer: it would drop the connection the relay runs on)."""
        client = self.client
        return (
            client is not None
            and "doctor" in client.features
            and client.post({"type": "doctor", "id": pid})
        )

    def _received(self, msg: dict) -> None:
        kind = msg.get("type")
        if kind == "doctor-report":
            if isinstance(msg.get("report"), dict) and self.on_report is not None:
                self.on_report(msg["report"])  # checked there like any report
            return
        if kind != "advert":
            raise sp.FrameError("garbage", f"relay: unexpected {kind!r}")
        try:
            demote, preference, bow_out, counter = parse_advert(msg)
        except ValueError as e:
            self.counters["relay_garbage"] += 1
            raise sp.FrameError("garbage", f"relayed advert: {e}") from None
        self.counters["heard"] += 1
        self.last_heard = time.monotonic()
        self.on_advert(demote, preference, bow_out, counter)

    async def run(self) -> None:
        """Keep one connection to the partner (reconnecting after RETRY s) and feed what it
        relays to the election."""
        while True:
            ch = None
            try:
                if cancel_requested():
                    raise asyncio.CancelledError
                ch = await self.sync._connect()
                keep_alive(ch)
                self.client, self._asked = ch, None
                self.connected_since = time.monotonic()
                self.ask(self.want)
                while True:
                    self._received(await ch.recv(timeout=3600))
            except asyncio.CancelledError:
                raise
            except (TimeoutError, OSError, ConnectionError, sp.FrameError, SyncRefused) as e:
                self.counters["disconnects"] += 1
                log.debug("relay: %s", e)
            except Exception as e:  # nothing the partner sends ends the relay for good
                self.counters["disconnects"] += 1
                self.counters["internal_error"] += 1
                self._errors.exception(type(e).__name__, "relay: connection failed")
            finally:
                if ch is not None:
                    ch.close()
                self.client = self.connected_since = None
            await self._pause()

    async def _pause(self) -> None:
        """Until the next connection attempt: RETRY s, or HURRY s once adverts are wanted
        (none after a connection we ended because it was stuck: the path works again)."""
        if self._redial:
            self._redial = False
            return
        if not self.want:
            self._hurry.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._hurry.wait(), RETRY - HURRY)
                self.counters["hurried"] += 1
        await asyncio.sleep(HURRY)

    def status(self, now: float) -> dict:
        wants = self.partner_wants()
        return {
            "connected": self.client is not None,
            "want": self.want,
            "partner_wants": wants is not None,
            "partner_state": wants["state"] if wants else None,
            "heard_ago": None if self.last_heard is None else round(now - self.last_heard, 3),
            "counters": dict(self.counters),
        }
