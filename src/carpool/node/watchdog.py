"""The worker's pulse, seen by its supervisor: a hung worker is killed and cleaned up after.

A worker stopped by SIGSTOP or stuck in a loop that never yields keeps its shared addresses (the
fence darkens them, node/fence.py) and its sockets, and nothing restarts it: it is not dead.
The worker writes one byte to a pipe from its event loop every BEAT seconds; the supervisor,
which does nothing else, reads the pipe and SIGKILLs the worker once the pipe has been silent
for the watchdog timeout, then cleans up as after any death. The watch is armed by the first
beat, so a slow start (imports, the first data plane load) is never mistaken for a hang.

The beat rides on the loop's advert turns (node/rides.py) and has a timer of its own only as a
backstop, `step + slack` s after the last beat: an idle loop wakes for nothing else.

A loop that is blocked for less than the timeout is no hang but costs adverts all the same. A
small thread waits on the pulse's turns: once the loop misses LAG_REPORT s of them it logs where
the loop's thread is (its Python stack, at most every STACK_EVERY s), and the pulse logs the
length once the loop turns again. (faulthandler's dump_traceback_later would do the first part
without a thread, but it reads the running thread's frames unlocked: it crashed the worker with
SIGSEGV in a chaos campaign.)
"""

from __future__ import annotations

import asyncio
import os
import select
import sys
import threading
import time
import traceback

from .. import events
from .rides import Rides
from .threads import name_os_thread

log = events.logger("carpool.watchdog", events.Kind.DAEMON)
ENV = "CARPOOL_WATCHDOG_FD"
MIN_TIMEOUT = 5.0
LAG_REPORT = 0.5  # a blocked loop worth a stack trace: longer than any advert interval
STACK_EVERY = 10.0  # s between two stacks in the log (a loop that keeps stalling: no flood)
MIN_LAG_WAIT = 0.01  # s: the lag thread's shortest sleep (a clock at the edge never spins it)


def watchdog_timeout(master_down: float, advert_interval: float, configured: float) -> float:
    """configured (unit.watchdog) when set; else master-down plus two adverts, at least 5 s.
    The fence has darkened a hung unit's addresses long before; the kill only ends the hang,
    so it can wait out a loop that is merely slow (a big configuration, the WUI starting on
    a busy machine took 2 s in the fast profile)."""
    if configured >= 0:
        return configured
    return max(MIN_TIMEOUT, master_down + 2 * advert_interval)


class Pulse:
    """Worker side: beat from the event loop (a loop that runs is a loop that answers)."""

    def __init__(self, fd: int | None, interval: float, lag_report: float = LAG_REPORT):
        self.fd, self.interval, self.lag_report = fd, interval, lag_report
        # a beat at the first advert turn `step` s after the last, by the backstop `slack` s
        # later at the latest; the lag thread wakes when the last beat is lag_report s overdue
        self.step = min(interval, lag_report)
        self.slack = 0.0
        self.lag_max = 0.0
        self.lags = 0  # beats that came more than lag_report after the backstop's time
        self._rides: Rides | None = None
        self._own_rides = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._due = self._written = 0.0
        self._turned_at = time.monotonic()  # the last turn (written by the loop)
        self._stopped = threading.Event()
        self._loop_thread = 0
        self._stack_at = float("-inf")
        if fd is not None:
            os.set_blocking(fd, False)

    @classmethod
    def from_env(cls, timeout: float) -> Pulse:
        """Beats to the supervisor's pipe when there is one and a timeout; the lag report runs
        either way."""
        value = os.environ.pop(ENV, "")
        fd = int(value) if value.isdigit() and timeout > 0 else None
        return cls(fd, max(0.01, timeout / 8) if timeout > 0 else 1.0)

    def start(
        self, loop: asyncio.AbstractEventLoop, rides: Rides | None = None, slack: float = 0.0
    ) -> None:
        """rides: the loop's advert turns to beat on (none: a timer every step s)."""
        self._rides, self._own_rides = rides or Rides(loop), rides is None
        # the supervisor kills after 8 intervals of silence: a beat every half of that at most,
        # however long the adverts take (a short unit.watchdog)
        self.slack = min(slack, max(0.0, 4 * self.interval - self.step))
        self._loop = loop
        self._due = loop.time() + self.slack  # the first beat's backstop
        self._loop_thread = threading.get_ident()
        threading.Thread(target=self._watch_lag, name="carpool-lag", daemon=True).start()
        self._rides.add("pulse", self.step, self.slack, self._beat)

    def _watch_lag(self) -> None:
        """Off the loop: log where the loop's thread is once it has not beaten for a step, the
        slack and lag_report s (one stack per stall, at most one per STACK_EVERY). It sleeps
        until that moment, not a fixed lag_report: a beating loop wakes it once a beat."""
        name_os_thread()
        reported = None
        wait = self.lag_report
        while not self._stopped.wait(wait):
            turned = self._turned_at
            now = time.monotonic()
            due = turned + self.step + self.slack + self.lag_report
            wait = self.lag_report
            if now < due:
                wait = max(due - now, MIN_LAG_WAIT)
                continue
            if turned == reported or now - self._stack_at < STACK_EVERY:
                continue
            self._stack_at, reported = now, turned
            frame = sys._current_frames().get(self._loop_thread)
            stack = "".join(traceback.format_stack(frame)[-12:]) if frame else "(no frame)\n"
            log.warning(
                "the event loop has not turned for %.1f s; it is at:\n%s",
                now - turned,
                stack.rstrip(),
            )

    def _beat(self) -> None:
        assert self._loop is not None  # (added to the rides by start)
        now = self._loop.time()
        late = now - self._due
        self.lag_max = max(self.lag_max, late)
        if late > self.lag_report:
            self.lags += 1
            log.warning("the event loop was blocked for %.3f s", late)
        if self.fd is not None and now - self._written >= self.interval:
            try:
                os.write(self.fd, b".")
            except BlockingIOError:
                pass  # the supervisor is behind (stopped too?): the pipe holds plenty of beats
            except OSError:
                self.fd = None  # the supervisor is gone (PR_SET_PDEATHSIG ends us); keep turning
            self._written = now
        self._turned_at = time.monotonic()
        self._due = now + self.step + self.slack  # (the backstop's time)

    def status(self) -> dict:
        return {
            "lag_max_ms": round(self.lag_max * 1000, 1),
            "lags": self.lags,
            "lag_report_s": self.lag_report,
        }

    def stop(self) -> None:
        if self._rides is not None and self._own_rides:
            self._rides.close()
        elif self._rides is not None:
            self._rides.remove("pulse")
        self._stopped.set()
        if self.fd is None:
            return
        try:
            os.close(self.fd)
        except OSError:
            pass


def watch(
    fd: int, timeout: float, exited, now=time.monotonic, ended_fd: int | None = None
) -> str | None:
    """Supervisor side: return None once `exited()` says the worker ended, or the reason to
    kill it once the pipe has been silent for `timeout` s after a first beat (0 = never).
    ended_fd: readable when the worker ends (its pidfd): then the supervisor sleeps until a
    beat, the end or a quarter of the timeout, instead of asking `exited()` 20 times a second."""
    last: float | None = None
    poll = select.poll()
    poll.register(fd, select.POLLIN)
    if ended_fd is not None:
        poll.register(ended_fd, select.POLLIN)
    step = 0.05 if ended_fd is None else 1.0
    step = step if timeout <= 0 else min(step, timeout / 4)
    while not exited():
        before = now()
        events = poll.poll(step * 1000)
        if last is not None and now() - before > max(timeout / 2, 1.0):
            last = now()  # we were stopped ourselves (the whole unit was): a fresh start
        for _fd, event in events:
            if _fd == ended_fd:
                continue  # the worker ended: `exited()` reaps it
            if event & select.POLLIN:
                try:
                    if os.read(fd, 4096):
                        last = now()
                except BlockingIOError:
                    pass
            elif event & (select.POLLHUP | select.POLLERR):
                poll.unregister(fd)  # the worker closed its end (exiting): wait for it
        if timeout > 0 and last is not None and now() - last > timeout:
            return (
                f"its event loop has not answered for {now() - last:.2f} s (watchdog {timeout:g} s)"
            )
    return None
