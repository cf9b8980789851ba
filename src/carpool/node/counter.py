"""The counter of this unit's carpool adverts: above every counter it sent before, across
restarts, so the partner's replay rule (ha/replay.py) takes a restarted unit's adverts and no
copy of an old one.

Seeded from the larger of the wall clock (microseconds: far above one advert per microsecond)
and the reservation stored in the state directory; a new reservation is stored before the
counter reaches it. A clock stepped back is covered by the stored reservation, a wiped state
directory (tmpfs after a reboot) by the clock. The supervisor's last bow-out starts above the
worker's reservation.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from .. import events, files

log = events.logger("carpool.daemon", events.Kind.DAEMON)
RESERVE = 1 << 32  # counters per stored reservation: years of adverts every 20 ms
FILE = "advert-counter"
MAX = (1 << 64) - 1


class AdvertCounter:
    def __init__(self, state_dir: str | Path, clock: Callable[[], float] = time.time):
        self.path = Path(state_dir) / FILE
        self.value = max(int(clock() * 1_000_000), self._stored())
        self.limit = self.value
        self._reserve()

    def next(self) -> int:
        self.value = min(self.value + 1, MAX)
        if self.value >= self.limit:
            self._reserve()
        return self.value

    def _stored(self) -> int:
        try:
            text = self.path.read_text()[:32].strip()
        except FileNotFoundError:
            return 0
        except OSError as e:
            log.warning(
                "cannot read %s (%s): the advert counter starts from the clock", self.path, e
            )
            return 0
        return int(text) if text.isdigit() else 0

    def _reserve(self) -> None:
        self.limit = min(self.value + RESERVE, MAX)
        try:
            files.private_dir(self.path.parent)
            files.write_private(self.path, str(self.limit))
        except OSError as e:
            log.warning(
                "cannot store the advert counter in %s (%s): after a restart with the clock "
                "set back the partner would take this unit's adverts for replays",
                self.path,
                e,
            )
