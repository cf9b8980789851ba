"""A planned failover's handover (dataplane/handover.py says what and why): the new active unit
forwards what it does not know to the old one for `ha.handover_drain` seconds; the old unit
finishes its HTTP connections meanwhile, and stops early once its old HAProxy worker is gone.

Both sides start from the election's effects (a take after the partner's bow-out, our own
bow-out's release) and end on a timer, on the other effect (a release cuts the forwarding
short, a take the finishing), or at shutdown. Each step that fails is logged and leaves the
failover as it would be without a handover: the takeover never waits for it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol

from .. import events
from ..dataplane import handover as plan
from ..dataplane.l4 import enable_forwarding
from .nft import NftCommands

log = events.logger("carpool.handover", events.Kind.DATAPLANE)
POLL = 0.1  # s between looks at the old HAProxy worker while finishing


class Finisher(Protocol):
    """The L7 data plane, as far as a handover needs it."""

    async def finish_clients(self) -> bool: ...
    async def old_workers(self) -> int | None: ...


class FenceView(Protocol):
    def finish(self, listeners: list[tuple[plan.Address, int]], seconds: float) -> bool: ...
    def finished(self) -> None: ...


class Handover:
    def __init__(
        self,
        fence: FenceView,
        unlocal: Callable[[list[str]], None],
        l7: Finisher,
        spawn: Callable,
    ):
        self.fence, self.unlocal, self.l7, self.spawn = fence, unlocal, l7, spawn
        self.side: str | None = None  # "forwarding" | "finishing" | None
        self.until = 0.0  # time.monotonic() the period ends
        self.listeners = 0
        self.handed_back = {"packets": 0, "bytes": 0}  # forwarding: rewritten to the partner
        self.finished = 0  # finishing: relayed packets given their service back
        self.last: dict | None = None  # the last handover: side, seconds, why it ended
        self._local: list[str] = []
        self._families: tuple[str, ...] = ()  # those with a table (its counter read)
        self._started = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._done = asyncio.Event()
        self._done.set()
        self._nft = NftCommands(log, "handover")

    def clear(self) -> None:
        """At start: a crashed unit's tables go (their elements have timed out already)."""
        self._nft.run(plan.remove_commands())

    # -- the election's effects ------------------------------------------------------------
    def forward(self, cfg) -> None:
        """We take over because the partner bowed out: before the addresses come up."""
        self.end("we took over again")
        seconds = cfg.document.ha.handover_drain
        found = plan.pairs(cfg) if seconds else []
        if not found:
            return
        for family in {"ip6" if p.address.version == 6 else "ip" for p in found}:
            enable_forwarding(family, "a planned failover's connections go back to the partner")
        mark = plan.MARK.get(cfg.role, plan.MARK["first"])
        if not self._nft.run(plan.forward_commands(found, mark, seconds)):
            return
        self._begin("forwarding", found, seconds)
        log.info(
            "handover: for %d s, packets of HTTP connections we did not open go back to the "
            "partner (%d listeners)",
            seconds,
            len(found),
        )

    def finish(self, cfg) -> tuple[list[str], int]:
        """We bow out: (addresses to keep on `lo`, for how long) for the release that follows;
        the fence lets the listeners' connections through, relayed packets find them again,
        and HAProxy closes each connection after its next answer."""
        self.end("we bowed out")
        seconds = cfg.document.ha.handover_drain
        found = plan.pairs(cfg) if seconds else []
        if not found:
            return [], 0
        listeners = [(p.address, p.port) for p in found]
        if not self.fence.finish(listeners, seconds) or not self._nft.run(
            plan.finish_commands(found, seconds)
        ):
            self._nft.run(plan.remove_commands())
            self.fence.finished()
            return [], 0
        self._local = sorted({f"{p.address}/{p.address.max_prefixlen}" for p in found})
        self._begin("finishing", found, seconds)
        self._done.clear()
        self.spawn(self._finish_clients())
        log.info(
            "handover: finishing our HTTP connections for up to %d s (%d listeners); the "
            "partner hands their packets back",
            seconds,
            len(found),
        )
        return list(self._local), int(seconds) + 1

    def end(self, why: str) -> None:
        """Over (the period ran out, the old worker is gone, or the election moved on)."""
        side = self.side
        if side is None:
            return
        self._count(side, *self._table_counter())
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._nft.run(plan.remove_commands())
        if side == "finishing":
            self.fence.finished()
            self.unlocal(self._local)
            self._local = []
        self.side = None
        self._done.set()
        took = time.monotonic() - self._started
        self.last = {"side": side, "seconds": round(took, 3), "ended": why}
        log.info("handover (%s) over after %.2f s: %s", side, took, why)

    async def wait(self, timeout: float) -> bool:
        """Until the finishing is over (a stopping unit's HAProxy must live until then)."""
        try:
            await asyncio.wait_for(self._done.wait(), timeout)
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.end("the unit stops")

    # -- inside -----------------------------------------------------------------------------
    def _begin(self, side: str, found: list[plan.Pair], seconds: float) -> None:
        self.side, self.listeners = side, len(found)
        self._families = tuple(sorted({"ip6" if p.address.version == 6 else "ip" for p in found}))
        self._started = time.monotonic()
        self.until = self._started + seconds
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(seconds, self.end, f"the {seconds:g} s period ran out")

    async def _finish_clients(self) -> None:
        if not await self.l7.finish_clients():
            log.warning("handover: HAProxy did not reload; its connections finish as they can")
        while self.side == "finishing" and time.monotonic() < self.until:
            if await self.l7.old_workers() == 0:
                self.end("every connection of the old HAProxy worker is closed")
                return
            await asyncio.sleep(POLL)

    def _table_counter(self) -> tuple[int, int]:
        """(packets, bytes) the running handover's rule has rewritten, both families."""
        if self.side is None:
            return 0, 0
        packets = octets = 0
        name = plan.counter_name(self.side)
        for family in self._families:
            listing = self._nft.listing(f"list counter {family} {plan.TABLE} {name}")
            for item in (listing or {}).get("nftables", []):
                counter = item.get("counter") or {}
                packets += counter.get("packets", 0)
                octets += counter.get("bytes", 0)
        return packets, octets

    def _count(self, side: str, packets: int, octets: int) -> None:
        if side == "forwarding":
            self.handed_back["packets"] += packets
            self.handed_back["bytes"] += octets
        else:
            self.finished += packets

    def status(self) -> dict:
        packets, octets = self._table_counter()  # (0, 0) between handovers
        forwarding = self.side == "forwarding"
        return {
            "forwarding": forwarding,
            "finishing": self.side == "finishing",
            "left_s": round(max(0.0, self.until - time.monotonic()), 3) if self.side else 0.0,
            "listeners": self.listeners if self.side else 0,
            "handed_back": {
                "packets": self.handed_back["packets"] + (packets if forwarding else 0),
                "bytes": self.handed_back["bytes"] + (octets if forwarding else 0),
            },
            "finished_packets": self.finished + (0 if forwarding else packets),
            "last": self.last,
        }
