"""Fast partner detection on the heartbeat link (pure: bytes and events in, effects out, time
passed in). Adverts keep their interval; this only decides sooner that the partner is gone.

Both units send a small authenticated hello to each other over the heartbeat cable every
`interval`. The standby grows suspicious when the cable's carrier drops or no hello came for
`multiplier` intervals; it then asks the partner on every other path at once (a query with a
fresh nonce per path, answered by the partner's liveness socket) and waits `QUERY_TIMEOUT`:

    no answer anywhere  -> Gone: take over now (power loss, a dead or frozen unit)
    an answer           -> Cut: the heartbeat path failed, the partner lives: nothing moves

With no other path up there is nothing to ask, and a cut cable cannot be told from a dead
partner: the detector says so and leaves it to the advert timer. Until the first hello arrives
(the partner starting, or one without this detector) it does nothing at all.

    frame = MAGIC (4) | kind (1) | 0 (3) | session (4) | seq (4) | nonce (8) | MAC (16)

The MAC (HMAC-SHA256, first 16 bytes, with a key derived from the partner secret) covers the
24 bytes before it. A hello's seq rises within a session (a daemon start draws a new one); an
answer echoes its query's nonce. What an attacker on a path can do is delay the fast verdict:
a replayed hello or a dropped query leaves the partner "alive" until the advert timer decides,
and dropping every packet on every path is what a dead partner looks like to the adverts too.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from .drops import DropError, DropReason

PORT = 6975  # UDP, on each unit's own addresses
MAGIC = b"CPLV"
SIZE = 40
MAC_LEN = 16
QUERY_TIMEOUT = 0.025  # s: a LAN answers in well under a millisecond; this is the loop's slack
_BODY = struct.Struct("!4sB3xII8s")
_LABEL = b"carpool liveness key v1"


class Kind(enum.IntEnum):
    HELLO = 1
    QUERY = 2
    ANSWER = 3


_KINDS = {k.value: k for k in Kind}
_NO_NONCE = bytes(8)


class Frame(NamedTuple):
    # a tuple, not a frozen dataclass: built for every hello, whose thread wakes 10 times a
    # second on both units, and a cold wake-up pays for each line it runs
    kind: Kind
    session: int
    seq: int
    nonce: bytes = _NO_NONCE


def liveness_key(secret: bytes) -> bytes:
    """Its own key, derived from the partner secret (never the secret, nor the advert key)."""
    return hmac.new(secret, _LABEL, hashlib.sha256).digest()


def _mac(key: bytes, body: bytes) -> bytes:
    return hmac.digest(key, body, "sha256")[:MAC_LEN]  # one call into OpenSSL


def encode(key: bytes, frame: Frame) -> bytes:
    body = _BODY.pack(MAGIC, frame.kind, frame.session, frame.seq, frame.nonce)
    return body + _mac(key, body)


def hello(key: bytes, session: int, seq: int) -> bytes:
    """encode() of a hello, without building its Frame."""
    body = _BODY.pack(MAGIC, Kind.HELLO, session, seq, _NO_NONCE)
    return body + _mac(key, body)


def decode(key: bytes, data: bytes) -> Frame:
    """A frame from the partner; DropError for anything else."""
    if len(data) != SIZE:
        raise DropError(DropReason.BAD_LENGTH, f"{len(data)} bytes, a liveness frame has {SIZE}")
    body, mac = data[: _BODY.size], data[_BODY.size :]
    magic, kind, session, seq, nonce = _BODY.unpack(body)
    if magic != MAGIC:
        raise DropError(DropReason.BAD_VERSION, "not a liveness frame")
    if not hmac.compare_digest(mac, _mac(key, body)):
        raise DropError(DropReason.BAD_HMAC, "liveness frame")
    known = _KINDS.get(kind)
    if known is None:
        raise DropError(DropReason.BAD_TYPE, f"liveness kind {kind}")
    return Frame(known, session, seq, nonce)


# -- the detector ------------------------------------------------------------------------------
class State(enum.Enum):
    WAITING = "waiting"  # no hello yet: nothing to judge
    ALIVE = "alive"
    ASKING = "asking"  # suspicious: queries out on the other paths
    CUT = "cut"  # the heartbeat path failed, the partner answered elsewhere
    GONE = "gone"  # no answer anywhere: the partner is down
    BLIND = "blind"  # suspicious, but no other path to ask on: the advert timer decides


@dataclass(frozen=True)
class SendHello:
    seq: int


@dataclass(frozen=True)
class SendQuery:
    path: str  # an interface other than the heartbeat
    nonce: bytes


@dataclass(frozen=True)
class Gone:
    reason: str


Effect = SendHello | SendQuery | Gone


class Detector:
    """The standby's judge of the partner, and the active unit's hello clock.

    The active unit sends hellos (`active(True)`); the standby listens for them and for the
    partner's adverts on the heartbeat link (both are signs of life: in a fast profile the
    adverts alone come often enough). A change of role starts the judging afresh, and only a
    hello starts it: a partner that sends none (a version without the detector, mid-upgrade;
    a hello thread that died) is left to the advert timer, not judged gone after each
    advert."""

    def __init__(
        self,
        interval: float,
        multiplier: int,
        nonce: Callable[[], bytes] | None = None,
        query_timeout: float = QUERY_TIMEOUT,
        hello_clock: bool = True,
    ):
        """interval: s between hellos and the unit of silence; nonce(): 8 fresh random bytes
        (os.urandom in the adapter; fixed in tests); query_timeout: s to wait for an answer
        (shorter in a fast profile, where the advert timer itself is that short);
        hello_clock: False when something else sends the hellos (the adapter's own thread)."""
        if interval <= 0 or multiplier < 1 or query_timeout <= 0:
            raise ValueError("interval and query_timeout must be > 0 and multiplier >= 1")
        self.interval, self.multiplier = interval, multiplier
        self.query_timeout = query_timeout
        self.hello_clock = hello_clock
        self._active = False
        self._nonce = nonce
        self.state = State.WAITING
        self.reason = "no hello from the partner yet"
        self.last_heard: float | None = None
        self._peer: tuple[int, int] | None = None  # (session, seq) of the last hello taken
        self._hellos_heard = False  # in this role: what lets an advert count as a sign of life
        self._seq = 0
        self._next_hello: float | None = None
        self._asked: dict[bytes, str] = {}  # nonce -> path, while ASKING
        self._ask_deadline: float | None = None
        self.counters = dict.fromkeys(
            ("hellos_sent", "hellos", "replayed", "queries", "answers", "gone", "cut", "blind"), 0
        )

    @property
    def detect_time(self) -> float:
        return self.interval * self.multiplier

    @property
    def sending(self) -> bool:
        """Active: the unit the hellos come from, judging nobody."""
        return self._active

    def deadline(self) -> float | None:
        """When to call tick() next (the next hello, the silence limit, the query deadline)."""
        times = [self._next_hello, self._ask_deadline]
        if self.state is State.ALIVE and self.last_heard is not None:
            times.append(self.last_heard + self.detect_time)
        return min((t for t in times if t is not None), default=None)

    def active(self, on: bool, now: float) -> None:
        """The unit became active (send hellos, judge nobody) or standby (listen, judge)."""
        self._active = on
        self._next_hello = now if on and self.hello_clock else None
        self._asked, self._ask_deadline, self.last_heard = {}, None, None
        self._hellos_heard = False
        reason = "active: sending hellos" if on else "no hello from the partner yet"
        self._enter(State.WAITING, reason)

    def hello(self, frame: Frame, now: float) -> None:
        """A valid hello from the partner on the heartbeat link."""
        if self._peer is not None and frame.session == self._peer[0] and frame.seq <= self._peer[1]:
            self.counters["replayed"] += 1
            return
        self._peer = (frame.session, frame.seq)
        self.counters["hellos"] += 1
        self.heard(now)

    def heard(self, now: float, hello: bool = True) -> None:
        """A sign of life from the partner on the heartbeat link: a hello, or an advert
        (hello=False), which counts once a hello has been heard in this role."""
        self.last_heard = now
        if self.sending or self.state in (State.ALIVE, State.ASKING):
            return  # an answer, not a late hello, settles a question already asked
        if hello:
            self._hellos_heard = True
        elif not self._hellos_heard:
            return
        self._enter(State.ALIVE, "the partner is heard on the heartbeat link")

    def answer(self, frame: Frame, now: float) -> list[Effect]:
        """A valid answer from the partner on some path."""
        path = self._asked.get(frame.nonce)
        if self.state is not State.ASKING or path is None:
            return []
        self.counters["answers"] += 1
        self.counters["cut"] += 1
        self._asked, self._ask_deadline = {}, None
        self._enter(State.CUT, f"the partner answers on {path}: the heartbeat path failed")
        return []

    def carrier_lost(self, now: float, paths_up: tuple[str, ...]) -> list[Effect]:
        """The heartbeat link lost its carrier (a cable pulled, the partner powered off)."""
        if self.state is not State.ALIVE:
            return []
        return self._suspect("the heartbeat link lost its carrier", now, paths_up)

    def tick(self, now: float, paths_up: tuple[str, ...]) -> list[Effect]:
        """paths_up: the other links to the partner that are up right now."""
        out: list[Effect] = []
        if self._next_hello is not None and now >= self._next_hello:
            self._seq += 1
            self.counters["hellos_sent"] += 1
            out.append(SendHello(self._seq))
            self._next_hello = max(self._next_hello + self.interval, now)
        if self._ask_deadline is not None and now >= self._ask_deadline:
            asked = sorted(set(self._asked.values()))
            self._asked, self._ask_deadline = {}, None
            self.counters["gone"] += 1
            reason = (
                f"{self.reason.partition(': asking')[0]}, and no answer on {', '.join(asked)} "
                f"within {self.query_timeout * 1000:g} ms"
            )
            self._enter(State.GONE, reason)
            out.append(Gone(reason))
        if (
            self.state is State.ALIVE
            and self.last_heard is not None
            and now >= self.last_heard + self.detect_time
        ):
            why = f"nothing heard on the heartbeat link for {now - self.last_heard:.3f} s"
            out += self._suspect(why, now, paths_up)
        return out

    def _suspect(self, why: str, now: float, paths_up: tuple[str, ...]) -> list[Effect]:
        if not paths_up:
            self.counters["blind"] += 1
            self._enter(State.BLIND, f"{why}; no other path up to ask the partner on")
            return []
        if self._nonce is None:
            raise RuntimeError("no nonce source")
        self._asked = {bytes(self._nonce()): path for path in paths_up}
        self._ask_deadline = now + self.query_timeout
        self.counters["queries"] += len(self._asked)
        self._enter(State.ASKING, f"{why}: asking on {', '.join(paths_up)}")
        return [SendQuery(path, nonce) for nonce, path in self._asked.items()]

    def _enter(self, state: State, reason: str) -> None:
        self.state, self.reason = state, reason
