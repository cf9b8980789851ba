"""The shared addresses this unit holds: added, renewed, announced and removed on one netlink
thread, in the order asked, without the event loop waiting for any of it.

The election's loop must keep its advert timer even when a netlink request is slow (a busy
rtnl lock, a reply pyroute2 waits for): that loop blocked for seconds cost the fast profile
its adverts. Whether a held address serves is the fence's job (node/fence.py, in the loop,
sub-millisecond); this module only keeps the kernel's addresses in step behind it. Jobs run in
submission order on one thread, so a release queued after a take undoes it; renewals coalesce
(one waits at most); a job that has not finished within STUCK s is reported and the thread
replaced, so one stuck request cannot hold the queue for good.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from typing import Callable, Iterable

from . import addresses
from .sched import realtime

log = logging.getLogger("carpool.addresses")
STUCK = 2.0
Item = tuple[str, str]  # (interface name, "address/prefix")


class SharedAddresses:
    def __init__(self, loop: asyncio.AbstractEventLoop | None = None, rt_priority: int = 0):
        self.loop = loop
        self.rt_priority = rt_priority  # the thread's too: a takeover waits for its add
        self.held: list[str] = []             # cidrs added (as last reported by the thread)
        self.counters = {"jobs": 0, "errors": 0, "stuck": 0, "renewals_coalesced": 0}
        self._executor = self._new_executor()
        self._running: tuple[str, float] | None = None   # (what, since: monotonic)
        self._renewing = False
        self._pending: set[concurrent.futures.Future] = set()

    def _new_executor(self) -> concurrent.futures.ThreadPoolExecutor:
        return concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="carpool-shared",
            initializer=realtime, initargs=(self.rt_priority, "the netlink thread"))

    # -- what the daemon asks ---------------------------------------------------------------
    def warm_up(self) -> None:
        """Open the thread's netlink and packet sockets now (~100 ms of pyroute2 set-up, more on
        a busy machine), so the first takeover does not wait for them."""
        self._submit("warm-up", self._warm_up)

    def take(self, items: list[Item], vmac: str | None, lifetime: int, announce: bool) -> None:
        """Add each address (or renew it) and, with announce, one gratuitous ARP right after
        it, before the next address is added (the burst follows with garp())."""
        self._submit("take", self._add, items, vmac, lifetime, announce)

    def renew(self, items: list[Item], vmac: str | None, lifetime: int) -> None:
        """Renew the kernel lifetime (or put back an address that went); coalesced."""
        if self._renewing:
            self.counters["renewals_coalesced"] += 1
            return
        self._renewing = True
        self._submit("renew", self._add, items, vmac, lifetime, False)

    def garp(self, items: list[Item], vmac: str | None, count: int) -> None:
        self._submit("garp", self._garp, items, vmac, count)

    def release(self, items: list[Item], vmac: str | None) -> None:
        """Withdraw every listed address (and the virtual MAC's macvlans); held is empty now:
        the fence went dark before this was called."""
        self.held.clear()
        self._submit("release", self._remove, items, vmac)

    def forget(self, cidrs: Iterable[str], items: list[Item], vmac: str | None) -> None:
        """Addresses a new configuration dropped: withdrawn in queue order."""
        gone = set(cidrs)
        self.held = [h for h in self.held if h not in gone]
        self._submit("forget", self._remove, items, vmac)

    async def drain(self, timeout: float) -> bool:
        """Wait (bounded) for the queued jobs: True when none is left."""
        pending = list(self._pending)
        if not pending:
            return True
        _, left = await asyncio.wait([asyncio.wrap_future(f) for f in pending], timeout=timeout)
        return not left

    def status(self) -> dict:
        running = None if self._running is None else {
            "job": self._running[0], "for_s": round(time.monotonic() - self._running[1], 3)}
        return {"held": list(self.held), "queued": len(self._pending), "running": running,
                "counters": dict(self.counters)}

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- the queue --------------------------------------------------------------------------
    def _submit(self, what: str, fn: Callable, *args) -> None:
        self._check_stuck()
        self.counters["jobs"] += 1
        future = self._executor.submit(self._run, what, fn, *args)
        self._pending.add(future)
        future.add_done_callback(lambda f: self._call_in_loop(self._done, what, f))

    def _run(self, what: str, fn: Callable, *args):
        self._running = (what, time.monotonic())
        try:
            return fn(*args)
        finally:
            self._running = None

    def _call_in_loop(self, fn: Callable, *args) -> None:
        loop = self.loop
        if loop is None or loop.is_closed():
            fn(*args)
            return
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop closed meanwhile (shutdown)
            fn(*args)

    def _done(self, what: str, future: concurrent.futures.Future) -> None:
        self._pending.discard(future)
        if what == "renew":
            self._renewing = False
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            self.counters["errors"] += 1
            log.error("shared addresses (%s) failed: %s", what, error)
            return
        if what in ("take", "renew"):
            for cidr in future.result():
                if cidr not in self.held:
                    self.held.append(cidr)

    def _check_stuck(self) -> None:
        running = self._running
        if running is None or time.monotonic() - running[1] < STUCK:
            return
        self.counters["stuck"] += 1
        log.error("netlink: the %s job has not finished in %.1f s; queued jobs move to a "
                  "fresh thread", running[0], time.monotonic() - running[1])
        old, self._executor = self._executor, self._new_executor()
        self._running = None
        self._renewing = False
        old.shutdown(wait=False, cancel_futures=True)
        # What was queued behind the stuck job is dropped with the old thread: the next renew
        # (within a second) puts held addresses back; dropped removals are covered by the
        # fence (dark already) and the addresses' kernel lifetime (they expire).
        self._pending.clear()

    # -- on the netlink thread --------------------------------------------------------------
    @staticmethod
    def _add(items: list[Item], vmac: str | None, lifetime: int, announce: bool) -> list[str]:
        added = []
        for ifname, cidr in items:
            try:
                addresses.add_shared(ifname, cidr, vmac, lifetime)
            except OSError as e:
                log.error("cannot add shared address %s on %s: %s", cidr, ifname, e)
                continue
            added.append(cidr)
            if announce:
                try:
                    addresses.send_garp(ifname, cidr.split("/")[0], vmac, count=1)
                except OSError as e:
                    log.warning("gratuitous ARP for %s on %s failed: %s", cidr, ifname, e)
        return added

    @staticmethod
    def _warm_up() -> None:
        try:
            addresses.warm_up()
        except OSError as e:
            log.warning("netlink/packet socket warm-up failed: %s", e)

    @staticmethod
    def _garp(items: list[Item], vmac: str | None, count: int) -> None:
        for ifname, cidr in items:
            try:
                addresses.send_garp(ifname, cidr.split("/")[0], vmac, count=count)
            except OSError as e:
                log.warning("gratuitous ARP for %s on %s failed: %s", cidr, ifname, e)

    @staticmethod
    def _remove(items: list[Item], vmac: str | None) -> None:
        by_iface: dict[str, list[str]] = {}
        for ifname, cidr in items:
            by_iface.setdefault(ifname, []).append(cidr)
        for ifname, cidrs in by_iface.items():
            try:
                addresses.remove_stale(ifname, cidrs, vmac)
            except OSError as e:
                log.error("cannot remove shared addresses on %s: %s", ifname, e)
