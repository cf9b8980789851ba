"""Two election units joined by a fake network on a fake clock (deterministic, no I/O).

Each SendAdvert of one unit reaches the other as an AdvertReceived `delay` seconds later, unless
the link is cut when it is sent. Timers: a unit gets a Tick exactly at its `deadline`. At equal
times, queued events (packets, scheduled operations) run before timers.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from carpool.ha import election as el

A_ADDRESS = int(IPv4Address("198.18.0.11"))
B_ADDRESS = int(IPv4Address("198.18.0.12"))
BOW_OUT_PREFERENCE = 255 * 256 + 255  # advbase = advskew = 255


def carp_params(
    address: int,
    advskew: int = 0,
    advbase: int = 1,
    preempt: bool = False,
    initial_wait: float = 0.0,
) -> el.Params:
    """Like CarpProfile.params: interval advbase + advskew/256, master-down 3*advbase + skew."""
    skew = advskew / 256
    return el.Params(
        rank_preference=advbase * 256 + advskew,
        address=address,
        advert_interval=advbase + skew,
        master_down=3 * advbase + skew,
        preempt=preempt,
        initial_wait=initial_wait,
    )


@dataclass
class Unit:
    name: str
    election: el.Election
    holding: bool = False  # shared addresses, as TakeAddresses/ReleaseAddresses left them
    effects: list[tuple[float, el.Effect]] = field(default_factory=list)

    @property
    def state(self) -> el.State:
        return self.election.state

    def of(self, kind) -> list[tuple[float, el.Effect]]:
        return [(t, e) for t, e in self.effects if isinstance(e, kind)]

    @property
    def notes(self) -> list[el.RunNotify]:
        return [e for _t, e in self.of(el.RunNotify)]


class Pair:
    def __init__(self, a: el.Params, b: el.Params, delay: float = 0.01):
        self.units = [Unit("a", el.Election(a)), Unit("b", el.Election(b))]
        self.delay = delay
        self.clock = 0.0
        self.link_up = True
        self.links: list[tuple[float, bool]] = [(0.0, True)]  # (time, up) changes
        self.timeline: list[tuple[float, tuple[el.State, ...]]] = [(0.0, self.states)]
        self._queue: list = []
        self._seq = itertools.count()

    a = property(lambda self: self.units[0])
    b = property(lambda self: self.units[1])

    @property
    def states(self) -> tuple[el.State, ...]:
        return tuple(u.state for u in self.units)

    @property
    def masters(self) -> int:
        return sum(u.state is el.State.MASTER for u in self.units)

    # -- driving ------------------------------------------------------------------------------
    def at(self, when: float, action) -> None:
        """Schedule `action` (a callable, or (unit, event)) at time `when`."""
        heapq.heappush(self._queue, (when, next(self._seq), action))

    def feed(self, unit: Unit, event: el.Event) -> list[el.Effect]:
        effects = unit.election.handle(event, self.clock)
        for effect in effects:
            unit.effects.append((self.clock, effect))
            match effect:
                case el.SendAdvert(bow_out=bow_out, demote=demote) if self.link_up:
                    p = unit.election.params
                    rank = el.Rank(
                        demote, BOW_OUT_PREFERENCE if bow_out else p.rank_preference, p.address
                    )
                    self.at(
                        self.clock + self.delay,
                        (self.other(unit), el.AdvertReceived(rank, bow_out, "eth0")),
                    )
                case el.TakeAddresses():
                    assert not unit.holding, f"{unit.name}: takes addresses it holds"
                    unit.holding = True
                case el.ReleaseAddresses():
                    unit.holding = False
        for u in self.units:
            assert u.holding == (u.state is el.State.MASTER), f"{u.name}: addresses vs state"
        if self.states != self.timeline[-1][1]:
            self.timeline.append((self.clock, self.states))
        return effects

    def other(self, unit: Unit) -> Unit:
        return self.units[1 - self.units.index(unit)]

    def set_link(self, up: bool) -> None:
        if up != self.link_up:
            self.link_up = up
            self.links.append((self.clock, up))

    def cut(self) -> None:
        self.set_link(False)

    def heal(self) -> None:
        self.set_link(True)

    def start(self, *units: Unit) -> None:
        for u in units or self.units:
            self.feed(u, el.Start())

    def run_until(self, until: float, max_steps: int = 200_000) -> None:
        for _ in range(max_steps):
            timers = [
                (u.election.deadline, i)
                for i, u in enumerate(self.units)
                if u.election.deadline is not None
            ]
            when_timer, i = min(timers) if timers else (float("inf"), -1)
            when_queue = self._queue[0][0] if self._queue else float("inf")
            if min(when_timer, when_queue) > until:
                self.clock = until
                return
            if when_queue <= when_timer:
                self.clock, _seq, action = heapq.heappop(self._queue)
                if callable(action):
                    action()
                else:
                    self.feed(*action)
            else:
                self.clock = when_timer
                self.feed(self.units[i], el.Tick())
        raise AssertionError(f"simulation did not reach t={until} in {max_steps} steps")

    def run_for(self, seconds: float) -> None:
        self.run_until(self.clock + seconds)

    # -- analysis -----------------------------------------------------------------------------
    def intervals(self, predicate, end: float | None = None) -> list[tuple[float, float]]:
        """[start, end) intervals of the timeline where predicate(states) holds."""
        end = self.clock if end is None else end
        out, opened = [], None
        for t, states in self.timeline:
            if predicate(states) and opened is None:
                opened = t
            elif not predicate(states) and opened is not None:
                out.append((opened, t))
                opened = None
        if opened is not None:
            out.append((opened, end))
        return out

    def dual_masters(self) -> list[tuple[float, float]]:
        return self.intervals(lambda s: s.count(el.State.MASTER) == 2)
