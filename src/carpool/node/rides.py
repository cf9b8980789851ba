"""Housekeeping that rides on the event loop's other wake-ups.

An idle unit's loop turns for its adverts: the timer that sends them on the active unit, their
arrival on the standby. A wake-up of a Python loop costs 100-300 µs of CPU on a small virtual
machine, so work that needs no timing of its own (the watchdog's pulse, the partner's echoes
for the WUI) runs in the first such turn once `every` s have passed since it last ran, and
only falls back to a timer of its own `every + slack` s after its last run, when no advert
came (a unit alone, a fast profile stopped). `Schedule` decides (time passed in), `Rides` holds
the loop's single backstop timer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

EARLY = 0.95  # of `every`: an advert interval of exactly `every` s (advskew 0) still carries it


@dataclass
class Ride:
    name: str
    every: float
    slack: float
    fn: Callable[[], object]
    last: float = float("-inf")

    def due(self, now: float) -> bool:
        return now - self.last >= self.every * EARLY

    @property
    def deadline(self) -> float:
        return self.last + self.every + self.slack


class Schedule:
    """Which rides run at a turn, and when the backstop must wake the loop if nothing does."""

    def __init__(self) -> None:
        self.rides: list[Ride] = []

    def add(self, ride: Ride, now: float) -> None:
        ride.last = now - ride.every  # due at the first turn
        self.rides.append(ride)

    def take(self, now: float) -> list[Ride]:
        """The rides due at a turn at `now`, marked as run."""
        due = [r for r in self.rides if r.due(now)]
        for ride in due:
            ride.last = now
        return due

    def deadline(self) -> float | None:
        return min((r.deadline for r in self.rides), default=None)


class Rides:
    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.schedule = Schedule()
        self.counters = {"ridden": 0, "backstop": 0}
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    def add(self, name: str, every: float, slack: float, fn: Callable[[], object]) -> None:
        self.schedule.add(Ride(name, every, slack, fn), self.loop.time())
        self._arm()

    def remove(self, name: str) -> None:
        self.schedule.rides = [r for r in self.schedule.rides if r.name != name]
        self._arm()

    def turn(self) -> None:
        """The loop woke for something else (an advert sent or heard): run what is due."""
        self._run(self.loop.time(), "ridden")

    def _backstop(self) -> None:
        self._timer = None
        self._run(self.loop.time(), "backstop")

    def _run(self, now: float, how: str) -> None:
        if self._closed:
            return
        due = self.schedule.take(now)
        for ride in due:
            self.counters[how] += 1
            ride.fn()
        if due or self._timer is None:
            self._arm()

    def _arm(self) -> None:
        deadline = self.schedule.deadline()
        if self._timer is not None:
            if deadline is not None and self._timer.when() == deadline:
                return
            self._timer.cancel()  # (a cancelled head is dropped without waking the loop)
            self._timer = None
        if deadline is not None and not self._closed:
            self._timer = self.loop.call_at(deadline, self._backstop)

    def status(self) -> dict:
        return {"rides": [r.name for r in self.schedule.rides], "counters": dict(self.counters)}

    def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
