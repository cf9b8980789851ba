"""The election's driver: events in (with the loop's time), effects out, in order, to the parts
that carry them; its one timer; the transitions' record (event log, state file)."""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .. import events, files
from ..ha import election as el
from .threads import name_os_thread

log = events.logger("carpool.daemon", events.Kind.DAEMON)


class Effects(Protocol):
    """What the election's effects are carried out by."""

    def send_adverts(self, bow_out: bool, demote: int) -> None: ...
    def take(self, announce: bool, handover: bool) -> None: ...
    def release(self, handover: bool) -> None: ...
    def announce(self) -> None: ...
    def notify(self, new: str, old: str, reason: str) -> None: ...


@dataclass
class DriverCounters:
    effect_errors: int = 0
    transitions: int = 0
    timer_late_max: float = 0.0  # s the election's timer ran late at worst (loop lag)
    timer_late_over_interval: int = 0  # times it ran more than an advert interval late


class ElectionDriver:
    def __init__(self, election: el.Election, state_dir: str, effects: Effects):
        self.election = election
        self.effects = effects
        self.counters = DriverCounters()
        self.events: collections.deque = collections.deque(maxlen=50)  # transitions
        self.on_transition: Callable[[dict], None] | None = None  # the event log's feed
        self._loop: asyncio.AbstractEventLoop | None = None  # the daemon's, from attach()
        self._timer: asyncio.TimerHandle | None = None
        self._state_file = StateFile(Path(state_dir) / "state")

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """The daemon's loop, once it runs: the election's clock and timer."""
        self._loop = loop

    @property
    def attached(self) -> bool:
        return self._loop is not None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The daemon's loop; RuntimeError before attach()."""
        if self._loop is None:
            raise _unattached()
        return self._loop

    @property
    def state(self) -> el.State:
        return self.election.state

    def is_active(self) -> bool:
        return self.election.state is el.State.MASTER

    def now(self) -> float:
        loop = self._loop  # not self.loop: the advert path pays no property call
        if loop is None:
            raise _unattached()
        return loop.time()

    def feed(self, event: Any) -> None:
        before = self.election.state
        for effect in self.election.handle(event, self.now()):
            try:
                self._carry_out(effect)
            except Exception:  # one failed effect must never stop the timer or the others
                self.counters.effect_errors += 1
                log.exception("applying %r failed", effect)
        if self.election.state is not before:
            self.counters.transitions += 1
            entry = {
                "time": time.time(),
                "old": before.value,
                "new": self.election.state.value,
                "reason": self.election.reason,
            }
            self.events.append(entry)
            if self.on_transition is not None:
                self.on_transition(entry)
            self._state_file.write(self.election.state.value)
        self._arm_timer()

    def _carry_out(self, effect: el.Effect) -> None:
        fx = self.effects
        match effect:
            case el.SendAdvert(bow_out=bow_out, demote=demote):
                fx.send_adverts(bow_out, demote)
            case el.TakeAddresses(announce=announce, handover=handover):
                fx.take(announce, handover)
            case el.ReleaseAddresses(handover=handover):
                fx.release(handover)
            case el.SendGarp():
                fx.announce()
            case el.RunNotify(new=new, old=old, reason=reason):
                fx.notify(new.value, old.value, reason)
            case _:
                log.error("unknown effect %r", effect)

    def _arm_timer(self) -> None:
        if self._timer:
            self._timer.cancel()
            self._timer = None
        deadline = self.election.deadline
        if deadline is not None:
            loop = self._loop  # not self.loop: the advert path pays no property call
            if loop is None:
                raise _unattached()
            self._timer = loop.call_at(deadline, self._on_timer, deadline)

    def _on_timer(self, deadline: float) -> None:
        late = self.now() - deadline
        self.counters.timer_late_max = max(self.counters.timer_late_max, late)
        if late > self.election.params.advert_interval:
            self.counters.timer_late_over_interval += 1
        self.feed(el.Tick())

    def close(self) -> None:
        if self._timer:
            self._timer.cancel()
        self._state_file.close()


def _unattached() -> RuntimeError:
    return RuntimeError("the election driver is used before the daemon's loop runs (attach)")


class StateFile:
    """The state file (for monitoring scripts), written on a thread with the latest state
    winning: a rename on a busy disk must not hold the transition's adverts."""

    def __init__(self, path: Path):
        self.path = path
        self._pool = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="carpool-files", initializer=name_os_thread
        )
        self._value, self._pending = "init", False

    def write(self, value: str) -> None:
        self._value = value
        if not self._pending:
            self._pending = True
            self._pool.submit(self._flush)

    def _flush(self) -> None:
        self._pending = False  # first: a change from here on submits another write
        try:
            files.write_private(self.path, self._value + "\n")
        except OSError as e:
            log.error("cannot write %s: %s", self.path, e)

    def close(self) -> None:
        self._pool.shutdown(wait=True)  # the last state lands


class Tasks:
    """The daemon's background tasks: kept referenced, cancelled at the end; notify hooks are
    awaited at shutdown (the bow-out's own hook gets to finish)."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task] = set()
        self.hooks: set[asyncio.Task] = set()

    def spawn(self, coro: Coroutine) -> asyncio.Task:
        if self.loop is None:
            raise RuntimeError("a background task spawned before the daemon's loop runs")
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(self.hooks.discard)
        return task

    def cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()
