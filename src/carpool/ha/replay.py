"""The counter rule of carpool adverts: from the partner, on each path, only a counter above
every one accepted before. Pure: counters in, a verdict out.

Per path, because one advert round sends the same counter on every interface. A copy re-sent
on another path fails the MAC (it covers the sender's address on that path), so it never gets
here. The sender seeds its counter above all it ever sent (node/counter.py), so a restarted
partner passes and a replay of anything it sent before does not. A unit that has just started
knows no counter yet: it takes the first sealed advert of each path as it comes.
"""

from __future__ import annotations


class ReplayGuard:
    def __init__(self) -> None:
        self.last: dict[str, int] = {}

    def accept(self, path: str, counter: int) -> bool:
        """True (and remembered) when `counter` is above the path's last; False for a replay."""
        last = self.last.get(path)
        if last is not None and counter <= last:
            return False
        self.last[path] = counter
        return True
