"""The shared addresses this unit holds: added, renewed, announced and removed on one netlink
thread, in the order asked, without the event loop waiting for any of it.

The election's loop must keep its advert timer even when a netlink request is slow (a busy
rtnl lock, a reply pyroute2 waits for): that loop blocked for seconds cost the fast profile
its adverts. Whether a held address serves is the fence's job (node/fence.py, in the loop,
sub-millisecond); this module only keeps the kernel's addresses in step behind it.

- Jobs run in submission order on one thread, so a release queued after a take undoes it;
  renewals coalesce (one waits at most).
- A job still running after STUCK s is reported and the queue moves, in order, to a fresh
  thread (a new generation). The abandoned job checks its generation before each netlink
  request and announcement, and its result is ignored, so it can never act after a newer job.
- `held` follows the jobs' results, except those of jobs asked for before the last release
  (an epoch): a renewal that finishes after a release does not put addresses back in `held`.
- A gratuitous ARP/NA asked for before the last release is not sent (one already on the wire
  cannot be recalled): a takeover that ran late, or the repeat with the second advert, would
  otherwise point the clients at a unit that just let the addresses go, after the partner's
  own announcement (a chaos campaign: 8 s without replies after a split healed). A forget
  (also an epoch) withdraws none: the addresses a new version keeps are still announced.
- `wedged()` says that no take or renewal has finished for longer than the addresses' kernel
  lifetime: the daemon then demotes itself rather than advertise addresses it no longer has.
"""

from __future__ import annotations

import asyncio
import collections
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from .. import events
from . import addresses, rtaddr
from .sched import realtime
from .threads import name_os_thread

log = events.logger("carpool.addresses", events.Kind.ADDRESSES)
STUCK = 2.0
LOOPBACK = "lo"
Item = tuple[str, str]  # (interface name, "address/prefix")


@dataclass(eq=False)
class Job:
    what: str
    fn: Callable
    args: tuple
    generation: int
    epoch: int
    releases: int
    submitted: float = field(default_factory=time.monotonic)


class Live:
    """What a job checks on the netlink thread: before each netlink request, that its thread
    is still the queue's (`live()`); before each announcement, also that no release was asked
    since the job was (`live.announcing()`)."""

    def __init__(self, owner: SharedAddresses, job: Job):
        self._owner, self._job = owner, job

    def __call__(self) -> bool:
        return self._job.generation == self._owner._generation

    def announcing(self) -> bool:
        if not self():
            return False
        if self._job.releases != self._owner._releases:
            self._owner.counters["announcements_withdrawn"] += 1
            return False
        return True


class SharedAddresses:
    def __init__(self, loop: asyncio.AbstractEventLoop | None = None, rt_priority: int = 0):
        self.loop = loop
        self.rt_priority = rt_priority  # the thread's too: a takeover waits for its add
        self.held: list[str] = []  # cidrs added (as last reported by the thread)
        self.counters = {
            "jobs": 0,
            "errors": 0,
            "stuck": 0,
            "renewals_coalesced": 0,
            "announcements_withdrawn": 0,
        }
        self._generation = 0
        self._epoch = 0
        self._releases = 0  # releases asked for (an announcement asked before one is not sent)
        self._queue: queue.SimpleQueue = self._new_thread()
        self._running: tuple[Job, float] | None = None  # (job, since: monotonic)
        self._renewing = False
        self._pending: list[Job] = []  # submitted, not yet done (in order)
        # renewals that changed nothing, told without waking the loop: read at its next use
        self._quiet: collections.deque[tuple[Job, list[str]]] = collections.deque()
        self._waiting_since: float | None = None  # a take/renew asked for, none done since
        self._closed = False

    def _new_thread(self) -> queue.SimpleQueue:
        jobs: queue.SimpleQueue = queue.SimpleQueue()
        # A daemon thread, not a pool's: a thread stuck in netlink must not hold the exit.
        threading.Thread(
            target=self._work,
            args=(jobs, self._generation),
            daemon=True,
            name=f"carpool-shared-{self._generation}",
        ).start()
        return jobs

    # -- what the daemon asks ---------------------------------------------------------------
    def warm_up(self) -> None:
        """Open the thread's netlink and packet sockets now (~100 ms of pyroute2 set-up, more on
        a busy machine), so the first takeover does not wait for them."""
        self._submit("warm-up", self._warm_up)

    def take(self, items: list[Item], vmac: str | None, lifetime: int, announce: int = 0) -> None:
        """Add each address (or renew it), and send `announce` gratuitous ARPs/NAs for it
        right after its add: a client's first address waits for no other address's netlink."""
        self._submit("take", self._take, items, vmac, lifetime, announce)

    def renew(self, items: list[Item], vmac: str | None, lifetime: int) -> None:
        """Renew the kernel lifetime (or put back an address that went); coalesced."""
        self._settle()
        self._check_stuck()  # a renewal stuck behind another must not hide the queue's state
        if self._renewing:
            self.counters["renewals_coalesced"] += 1
            return
        self._renewing = True
        self._submit("renew", self._renew, items, vmac, lifetime, 0)

    def garp(self, items: list[Item], vmac: str | None, count: int) -> None:
        self._submit("garp", self._garp, items, vmac, count)

    def release(
        self, items: list[Item], vmac: str | None, local: Sequence[str] = (), lifetime: int = 0
    ) -> None:
        """Withdraw every listed address (and the virtual MAC's macvlans); held is empty now:
        the fence went dark before this was called. The `local` ones (address/32 or /128) are
        put on `lo` first, for `lifetime` s: a planned failover's connections finish there."""
        self._epoch += 1
        self._releases += 1
        self.held.clear()
        self._waiting_since = None
        self._submit("release", self._remove, items, vmac, list(local), lifetime)

    def unlocal(self, local: list[str]) -> None:
        """The handover is over: the addresses kept on `lo` go."""
        self._submit("unlocal", self._unlocal, list(local))

    def forget(self, cidrs: Iterable[str], items: list[Item], vmac: str | None) -> None:
        """Addresses a new configuration dropped: withdrawn in queue order."""
        gone = set(cidrs)
        self._epoch += 1
        self.held = [h for h in self.held if h not in gone]
        self._submit("forget", self._remove, items, vmac)

    def wedged(self, limit: float, now: float | None = None) -> bool:
        """A take or renewal has been waiting for more than `limit` s with none finished."""
        now = time.monotonic() if now is None else now
        self._settle()
        return self._waiting_since is not None and now - self._waiting_since > limit

    async def drain(self, timeout: float) -> bool:
        """Wait (bounded) for the queued jobs: True when none is left."""
        deadline = time.monotonic() + timeout
        while self._settle() and self._pending and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        return not self._pending

    def status(self) -> dict:
        self._settle()
        running = self._running
        return {
            "held": list(self.held),
            "queued": len(self._pending),
            "running": None
            if running is None
            else {"job": running[0].what, "for_s": round(time.monotonic() - running[1], 3)},
            "counters": dict(self.counters),
        }

    def close(self) -> None:
        """No job is taken after this; the thread ends once its queue is done."""
        self._closed = True
        self._queue.put(None)

    # -- the queue (loop side) ----------------------------------------------------------------
    def _submit(self, what: str, fn: Callable, *args) -> None:
        if self._closed:
            log.debug("shared addresses: %s asked after close, ignored", what)
            return
        self._settle()
        self._check_stuck()
        job = Job(what, fn, args, self._generation, self._epoch, self._releases)
        if what in ("take", "renew") and self._waiting_since is None:
            self._waiting_since = job.submitted
        self.counters["jobs"] += 1
        self._enqueue(job)

    def _enqueue(self, job: Job) -> None:
        self._pending.append(job)
        self._queue.put(job)

    def _settle(self) -> bool:
        """The quiet renewals' ends, taken in. True (for a loop's condition)."""
        while self._quiet:
            self._done(*self._quiet.popleft(), None)
        return True

    def _done(self, job: Job, result, error: BaseException | None) -> None:
        if job in self._pending:
            self._pending.remove(job)
        if job.what == "renew":
            self._renewing = False
        if job.generation != self._generation:
            return  # an abandoned job finishing late: its queue was redone
        if error is not None:
            self.counters["errors"] += 1
            log.error("shared addresses (%s) failed: %s", job.what, error)
            return
        # not for a take or renewal asked for before a release or a forget (an older epoch)
        if job.what in ("take", "renew") and job.epoch == self._epoch:
            self._waiting_since = None
            for cidr in result:
                if cidr not in self.held:
                    self.held.append(cidr)

    def _check_stuck(self) -> None:
        running = self._running
        if (
            running is None
            or running[0].generation != self._generation
            or time.monotonic() - running[1] < STUCK
        ):
            return
        stuck = running[0]
        self.counters["stuck"] += 1
        log.error(
            "netlink: the %s job has not finished in %.1f s; the queue moves to a fresh thread",
            stuck.what,
            time.monotonic() - running[1],
        )
        old = self._queue
        self._generation += 1
        self._running = None
        self._queue = self._new_thread()
        old.put(None)  # the old thread ends if its job ever returns
        # What waited behind the stuck job moves, in order, to the new thread.
        waiting = [j for j in self._pending if j is not stuck]
        self._pending = []
        if stuck.what == "renew":
            self._renewing = False
        for job in waiting:  # same epoch: a take asked before a release stays out of held
            job.generation = self._generation
            self._enqueue(job)

    def _call_in_loop(self, fn: Callable, *args) -> None:
        loop = self.loop
        if loop is None or loop.is_closed():
            fn(*args)
            return
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop closed meanwhile (shutdown)
            fn(*args)

    # -- on the netlink thread --------------------------------------------------------------
    def _work(self, jobs: queue.SimpleQueue, generation: int) -> None:
        name_os_thread("carpool-shared")  # (the generation would not fit in 15 bytes)
        realtime(self.rt_priority, "the netlink thread")
        while True:
            job = jobs.get()
            if job is None:
                return
            if job.generation != generation:
                continue  # moved to the thread that replaced this one
            self._running = (job, time.monotonic())
            result, error = None, None
            try:
                result = job.fn(Live(self, job), *job.args)
            except Exception as e:  # reported in the loop; the thread goes on
                error = e
            if self._running is not None and self._running[0] is job:
                self._running = None
            if job.what == "renew" and isinstance(result, list) and set(result) <= set(self.held):
                # the loop needs not wake for it: the next renewal, status or wedge check
                # (each second while active) takes it in first
                self._quiet.append((job, result))
            else:
                self._call_in_loop(self._done, job, result, error)

    @staticmethod
    def _add(
        live: Live,
        items: list[Item],
        vmac: str | None,
        lifetime: int,
        announce: int,
    ) -> list[str]:
        added = []
        for ifname, cidr in items:
            if not live():
                break
            try:
                addresses.add_shared(ifname, cidr, vmac, lifetime)
            except OSError as e:
                log.error("cannot add shared address %s on %s: %s", cidr, ifname, e)
                continue
            added.append(cidr)
            if announce:
                SharedAddresses._garp(live, [(ifname, cidr)], vmac, announce)
        return added

    @staticmethod
    def _take(
        live: Live, items: list[Item], vmac: str | None, lifetime: int, announce
    ) -> list[str]:
        """Every address in one raw netlink batch (rtaddr.py), then each one's gratuitous
        ARPs/NAs in order; the pyroute2 add where that cannot do (a virtual MAC's macvlan, an
        IPv6 address left in duplicate address detection, an error)."""
        if vmac is not None:
            return SharedAddresses._add(live, items, vmac, lifetime, announce)
        done, again = SharedAddresses._raw(live, items, lifetime)
        if announce:
            for ifname, cidr in items:
                if cidr in done:
                    SharedAddresses._garp(live, [(ifname, cidr)], vmac, announce)
        return done + SharedAddresses._add(live, again, vmac, lifetime, announce)

    @staticmethod
    def _renew(
        live: Live, items: list[Item], vmac: str | None, lifetime: int, _announce
    ) -> list[str]:
        """Each second while active: the take's batch again, without announcements."""
        return SharedAddresses._take(live, items, vmac, lifetime, 0)

    @staticmethod
    def _raw(live: Live, items: list[Item], lifetime: int) -> tuple[list[str], list[Item]]:
        """(added or renewed, those left for pyroute2)."""
        if not items or not live():
            return [], []
        done, again = [], []
        for (ifname, cidr), error in zip(items, rtaddr.renew_many(items, lifetime), strict=True):
            if error is not None or addresses.dad_pending(ifname, cidr):
                again.append((ifname, cidr))
            else:
                done.append(cidr)
        return done, again

    @staticmethod
    def _warm_up(live: Live) -> None:
        try:
            addresses.warm_up()
        except OSError as e:
            log.warning("netlink/packet socket warm-up failed: %s", e)

    @staticmethod
    def _garp(live: Live, items: list[Item], vmac: str | None, count: int) -> None:
        for ifname, cidr in items:
            if not live.announcing():
                return
            try:
                addresses.send_garp(ifname, cidr.split("/")[0], vmac, count=count)
            except OSError as e:
                log.warning("gratuitous ARP for %s on %s failed: %s", cidr, ifname, e)

    @staticmethod
    def _unlocal(live: Live, local: list[str]) -> None:
        try:
            addresses.withdraw(LOOPBACK, local)
        except OSError as e:
            log.error("cannot remove the handed-over addresses from %s: %s", LOOPBACK, e)

    @staticmethod
    def _remove(
        live: Live,
        items: list[Item],
        vmac: str | None,
        local: Sequence[str] = (),
        lifetime: int = 0,
    ) -> None:
        for cidr in local:  # before the withdrawal: the connections never miss their address
            try:
                # no prefix route: the kernel keeps an address-with-lifetime's prefix route
                # after the address goes, and a /128 on lo would take the unit's own traffic
                # to that address until it expired
                rtaddr.renew(LOOPBACK, cidr, lifetime, rtaddr.IFA_F_NOPREFIXROUTE)
            except OSError as e:
                log.error("cannot keep %s on %s for the handover: %s", cidr, LOOPBACK, e)
        by_iface: dict[str, list[str]] = {}
        for ifname, cidr in items:
            by_iface.setdefault(ifname, []).append(cidr)
        # Every address first (quick), then the macvlans (slow): no address waits for a link.
        for step in (addresses.withdraw, addresses.remove_stale):
            for ifname, cidrs in by_iface.items():
                if not live():
                    return
                try:
                    step(ifname, cidrs)
                except OSError as e:
                    log.error("cannot remove shared addresses on %s: %s", ifname, e)
