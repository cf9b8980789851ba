"""A fast profile's standby reads the heartbeat's carrier when the adverts on it are late.

The heartbeat link's driver may tell of a carrier loss up to a second late (node/links.py), so a
fast profile reads it: a power loss must be seen within an advert interval. But an advert that
just came over the link says more than a read would: the cable carried it. So nothing is read
while they come. Each advert moves the read to LATE intervals after it; while none comes the
link is read every interval, on the loop. (The Heart used to read it 50 times a second, which
was the fast standby's most frequent wake-up: BENCHMARKS.md.)

A reading that differs from the monitor's view reads the link afresh (LinkMonitor.recheck),
which fires the change. Once the link reads down, the reads stop until the next advert on it: a
carrier that comes back is notified at once (linkwatch's urgent path), and the monitor's
regular poll reads it anyway.
"""

from __future__ import annotations

import asyncio

from .links import CarrierFiles, LinkMonitor

# an advert this many intervals late has the link read (the sender's timer jitters a little)
LATE = 1.05


class HeartbeatRead:
    def __init__(
        self, monitor: LinkMonitor, name: str, every: float, loop: asyncio.AbstractEventLoop
    ):
        self.monitor, self.name, self.every, self.loop = monitor, name, every, loop
        self.files = CarrierFiles(monitor)
        self.standby = False
        self.reads = 0
        self._timer: asyncio.TimerHandle | None = None
        monitor.gated[name] = round(every * LATE, 6)

    def set_standby(self, standby: bool) -> None:
        """Only the standby's detector judges a carrier loss: the active unit reads nothing."""
        self.standby = standby
        if standby:
            self._arm(self.loop.time() + self.every * LATE)
        else:
            self._cancel()

    def heard(self, now: float) -> None:
        """An advert came over the link."""
        if self.standby:
            self._arm(now + self.every * LATE)

    def _arm(self, when: float) -> None:
        self._cancel()
        self._timer = self.loop.call_at(when, self._due)

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()  # (a cancelled head is dropped without waking the loop)
            self._timer = None

    def _due(self) -> None:
        self._timer = None
        if not self.standby or self.name not in self.monitor.late_now:
            return  # its events come at once: nothing to read until the next advert
        self.reads += 1
        view = self.monitor.up_view.get(self.name, False)
        try:
            up = self.files.read(self.name)
        except OSError:  # (netlink failed too: the monitor's view stands)
            up = view
        if up != view:
            self.monitor.recheck(self.name)
        if up:
            self._arm(self.loop.time() + self.every)

    def close(self) -> None:
        self._cancel()
        self.files.close()
        self.monitor.gated.pop(self.name, None)
