"""Bounds on what input from outside may cost: token buckets per source (with one bucket over
all sources, since sources are easy to forge), and logs that cannot flood (at most one record
per kind every so many seconds; the next one says how many were left out).

Memory is bounded too: at most `max_keys` buckets and `max_kinds` log kinds, the stalest
forgotten first. Callers pass their clock (the loop's), so tests need no sleeping.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable, Hashable


class TokenBuckets:
    """allow(key): a token from key's bucket (`rate` a second, at most `burst`) and one from the
    shared bucket (`total_rate`, `total_burst`), or False with neither spent."""

    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        total_rate: float,
        total_burst: float,
        max_keys: int = 256,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.rate, self.burst, self.max_keys, self.clock = rate, burst, max_keys, clock
        self.total_rate, self.total_burst = total_rate, total_burst
        self._buckets: collections.OrderedDict[Hashable, list[float]] = collections.OrderedDict()
        self._total = [total_burst, clock()]

    def __len__(self) -> int:
        return len(self._buckets)

    @staticmethod
    def _take(bucket: list[float], rate: float, burst: float, now: float) -> bool:
        tokens = min(burst, bucket[0] + (now - bucket[1]) * rate)
        bucket[1] = now
        if tokens < 1:
            bucket[0] = tokens
            return False
        bucket[0] = tokens - 1
        return True

    def allow(self, key: Hashable) -> bool:
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = [self.burst, now]
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        # the shared bucket is asked only when the key's allows: a noisy source alone cannot
        # use up what the others may spend
        if not self._take(bucket, self.rate, self.burst, now):
            return False
        if not self._take(self._total, self.total_rate, self.total_burst, now):
            bucket[0] += 1  # not spent after all
            return False
        return True


class RateLimitedLog:
    """A logger's records, at most one per kind every `every` seconds."""

    def __init__(
        self,
        logger: logging.Logger | logging.LoggerAdapter,
        every: float = 10.0,
        *,
        max_kinds: int = 64,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.logger, self.every, self.max_kinds, self.clock = logger, every, max_kinds, clock
        self._kinds: collections.OrderedDict[Hashable, list[float]] = collections.OrderedDict()

    def log(
        self, level: int, kind: Hashable, msg: str, *args: object, exc_info: bool = False
    ) -> bool:
        """Log unless this kind was logged within `every` seconds; True if logged."""
        now = self.clock()
        seen = self._kinds.get(kind)
        if seen is not None and now - seen[0] < self.every:
            seen[1] += 1
            return False
        left_out = int(seen[1]) if seen is not None else 0
        self._kinds[kind] = [now, 0]
        self._kinds.move_to_end(kind)
        while len(self._kinds) > self.max_kinds:
            self._kinds.popitem(last=False)
        if left_out:
            msg += " (and %d more like it in %.0f s, not logged)"
            args = (*args, left_out, now - (seen[0] if seen else now))
        self.logger.log(level, msg, *args, exc_info=exc_info)
        return True

    def exception(self, kind: Hashable, msg: str, *args: object) -> bool:
        return self.log(logging.ERROR, kind, msg, *args, exc_info=True)

    def warning(self, kind: Hashable, msg: str, *args: object) -> bool:
        return self.log(logging.WARNING, kind, msg, *args)
