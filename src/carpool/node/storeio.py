"""The configuration store's writes, off the event loop.

Every store write fsyncs its files and their directory (config/store.py): 1.5 ms at the median
but up to 165 ms measured on a busy disk, longer than a fast profile's master-down, so done in
the election's loop a configuration change could cost adverts. Writes run on a thread, one at a
time: a job reads the current version and writes the next under the same lock, so two changes
never build on the same version. Reads stay in the loop (in memory, or one small file).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from ..config.store import Store, Version

T = TypeVar("T")


def current_version(store: Store) -> Version:
    """The store's current version: a running unit's store always has one (open_store commits
    the file's document into an empty store)."""
    version = store.current
    if version is None:
        raise RuntimeError(f"{store.dir}: the store has no current configuration version")
    return version


class StoreWriter:
    def __init__(self, store: Store):
        self.store = store
        self._lock = asyncio.Lock()
        self.writes = 0

    async def run(self, job: Callable[[], T]) -> T:
        """job() reads and writes the store; its exceptions reach the caller."""
        async with self._lock:
            self.writes += 1
            return await asyncio.to_thread(job)
