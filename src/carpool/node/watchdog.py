"""The worker's pulse, seen by its supervisor: a hung worker is killed and cleaned up after.

A worker stopped by SIGSTOP or stuck in a loop that never yields keeps its shared addresses (the
fence darkens them, node/fence.py) and its sockets, and nothing restarts it: it is not dead.
The worker writes one byte to a pipe from its event loop every BEAT seconds; the supervisor,
which does nothing else, reads the pipe and SIGKILLs the worker once the pipe has been silent
for the watchdog timeout, then cleans up as after any death. The watch is armed by the first
beat, so a slow start (imports, the first data plane load) is never mistaken for a hang.
"""
from __future__ import annotations

import asyncio
import logging
import os
import select
import time

log = logging.getLogger("carpool.watchdog")
ENV = "CARPOOL_WATCHDOG_FD"
MIN_TIMEOUT = 5.0


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

    def __init__(self, fd: int, interval: float):
        self.fd, self.interval = fd, interval
        self._handle: asyncio.TimerHandle | None = None
        os.set_blocking(fd, False)

    @classmethod
    def from_env(cls, timeout: float) -> "Pulse | None":
        value = os.environ.pop(ENV, "")
        if not value.isdigit():
            return None
        return cls(int(value), max(0.01, timeout / 8))

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._beat(loop)

    def _beat(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            os.write(self.fd, b".")
        except BlockingIOError:
            pass  # the supervisor is behind (stopped too?): the pipe holds plenty of beats
        except OSError:
            return  # the supervisor is gone; PR_SET_PDEATHSIG ends us
        self._handle = loop.call_later(self.interval, self._beat, loop)

    def stop(self) -> None:
        if self._handle:
            self._handle.cancel()
        try:
            os.close(self.fd)
        except OSError:
            pass


def watch(fd: int, timeout: float, exited, now=time.monotonic) -> str | None:
    """Supervisor side: return None once `exited()` says the worker ended, or the reason to
    kill it once the pipe has been silent for `timeout` s after a first beat (0 = never)."""
    last: float | None = None
    poll = select.poll()
    poll.register(fd, select.POLLIN)
    step = 0.05 if timeout <= 0 else min(0.05, timeout / 4)
    while not exited():
        before = now()
        events = poll.poll(step * 1000)
        if last is not None and now() - before > max(timeout / 2, 1.0):
            last = now()  # we were stopped ourselves (the whole unit was): a fresh start
        for _fd, event in events:
            if event & select.POLLIN:
                try:
                    if os.read(fd, 4096):
                        last = now()
                except BlockingIOError:
                    pass
            elif event & (select.POLLHUP | select.POLLERR):
                poll.unregister(fd)  # the worker closed its end (exiting): wait for it
        if timeout > 0 and last is not None and now() - last > timeout:
            return f"its event loop has not answered for {now() - last:.2f} s " \
                   f"(watchdog {timeout:g} s)"
    return None
