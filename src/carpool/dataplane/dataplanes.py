"""The unit's data plane as one port: L4 (nftables), L7 (HAProxy), state sync (conntrackd)
and the real servers' health checks that steer both. The daemon applies documents to it; web
and status read its status and counters."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING

from .. import events
from ..family import hostport
from .conntrack import ConntrackSync
from .drain import Drain, Drains
from .haproxy import HaproxyDataplane
from .health import HealthChecker
from .l4 import L4Dataplane
from .nft import traffic_counters
from .stats import RANGES, Stats, l4_traffic, samples

if TYPE_CHECKING:
    from ..config.ha import Config

log = events.logger("carpool.daemon", events.Kind.DATAPLANE)


class Dataplanes:
    def __init__(self, state_dir: str, spawn: Callable[[Coroutine], asyncio.Task]):
        """spawn(coro): run a background job (the daemon's tasks: cancelled at its end)."""
        self.spawn = spawn
        self.cfg: Config | None = None
        self.health = HealthChecker(on_change=self._server_changed)
        self.l4 = L4Dataplane()
        self.l7 = HaproxyDataplane(Path(state_dir) / "haproxy")
        self.state_sync = ConntrackSync(Path(state_dir) / "conntrackd")
        self.stats = Stats()
        self.sample_errors = 0
        self.drains = Drains()  # on the loop's clock
        self.cut: frozenset[Drain] = frozenset()  # drains run out and acted on
        self._drain_timer: asyncio.TimerHandle | None = None

    async def start(self, cfg, pinger) -> None:
        self.cfg = cfg
        self.health.pinger = pinger
        self.health.update(cfg.document)
        self._drains_changed()
        await self.l4.apply(cfg.document, self.health.healthy, self.cut)
        await self.l7.apply(cfg, self.health.healthy)
        await self.state_sync.apply(cfg)
        self.spawn(self._sample_forever())

    def apply(self, cfg, ha_changed: bool) -> None:
        """A new version: servers and services at once; conntrackd if its settings moved."""
        self.cfg = cfg
        self.health.update(cfg.document)
        self._drains_changed()
        self.spawn(self.l4.apply(cfg.document, self.health.healthy, self.cut))
        self.spawn(self.l7.apply(cfg, self.health.healthy))
        if ha_changed:
            self.spawn(self.state_sync.apply(cfg))

    def _server_changed(self, key: tuple[str, str, int], up: bool) -> None:
        name, address, port = key
        doc = self.cfg.document if self.cfg is not None else None
        if doc is None:  # (never: no server is checked before start() brings a document)
            return
        service = name.partition(":")[0]  # "site" or a pool's "site:api"
        vs = next((v for v in doc.virtual_service if v.name == service), None)
        group = None if vs is None else dict(vs.groups()).get(name)
        if vs is None or group is None:
            return
        if vs.proxied:  # the runtime API: no reload for a health flip
            self.spawn(self.l7.set_server(name, group, address, port, up))
        else:
            self.spawn(self.l4.apply(doc, self.health.healthy, self.cut))

    def _drains_changed(self) -> None:
        """A new document: draining servers start (or keep) their clocks; the cut ones that
        are back in the pool are no longer cut."""
        loop = asyncio.get_running_loop()
        if self.cfg is not None and self.cfg.document is not None:
            self.drains.update(self.cfg.document, loop.time())
        self.cut &= self.drains.expired(loop.time())
        self._drain_due(apply=False)

    def _drain_due(self, apply: bool = True) -> None:
        """Cuts what is left on the servers whose drain ran out; waits for the next one."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        doc = self.cfg.document if self.cfg is not None else None
        fresh = self.drains.expired(now) - self.cut
        if fresh and doc is not None:
            self.cut |= fresh
            services = {v.name: v for v in doc.virtual_service}
            for d in sorted(fresh, key=lambda d: (d.key, d.address, d.port)):
                vs = services.get(d.service)
                group = None if vs is None else dict(vs.groups()).get(d.key)
                if vs is None or group is None:
                    continue
                log.info(
                    "drain timeout (%d s) of %s/%s ran out: %s",
                    d.timeout,
                    d.key,
                    hostport(d.address, d.port),
                    "its sessions are closed" if vs.proxied else "its flows are reset",
                )
                if vs.proxied:
                    self.spawn(self.l7.shutdown_sessions(d.key, group, d.address, d.port))
            if apply and any(
                not services[d.service].proxied for d in fresh if d.service in services
            ):
                self.spawn(self.l4.apply(doc, self.health.healthy, self.cut))
        if self._drain_timer is not None:
            self._drain_timer.cancel()
        deadline = self.drains.deadline(now)
        self._drain_timer = None if deadline is None else loop.call_at(deadline, self._drain_due)

    def servers(self) -> list[dict]:
        return self.health.status()

    def status(self) -> dict:
        return {
            "l4": self.l4.status(),
            "l7": self.l7.status(),
            "state_sync": self.state_sync.status(),
            "servers": self.health.status(),
        }

    async def sample(self, now: float) -> None:
        """One reading of the traffic statistics (HAProxy's and the L4 rules' totals)."""
        cfg = self.cfg
        if cfg is None or cfg.document is None:
            return
        doc = cfg.document
        rows = await self.l7.stats() if any(v.proxied for v in doc.virtual_service) else []
        l4 = {}
        if any(not v.proxied for v in doc.virtual_service):
            new, counters = await self.l4.connections(), await self.l4.traffic_counters()
            l4 = l4_traffic(doc, new, counters, await self.l4.flows())
        self.stats.add(now, samples(doc, rows, l4, self.health.status()))

    async def _sample_forever(self) -> None:
        step = RANGES["1h"][0]
        while True:
            try:
                await self.sample(time.time())
            except Exception as e:  # statistics must never stop the data plane
                self.sample_errors += 1
                log.warning("traffic statistics: a reading failed: %s", e)
            # on the wall clock's grid of the step: points of both units line up
            await asyncio.sleep(step - (time.time() % step) or step)

    async def counters(self) -> tuple[list[tuple[str, int, int]], list[dict]]:
        """(nft rule counters, HAProxy `show stat` rows) for /metrics."""
        rules = await self.l4.counters()
        doc = self.cfg.document if self.cfg is not None else None
        if doc is not None and any(not v.proxied for v in doc.virtual_service):
            names = traffic_counters(doc)
            for where, (packets, octets) in (await self.l4.traffic_counters()).items():
                if where in names:  # "web/198.18.2.101:80 in" (bytes to it), "out", "new"
                    rules.append(
                        (f"{names[where][1]} {where[1].rpartition('_')[2]}", packets, octets)
                    )
        return rules, await self.l7.stats()

    async def stop(self) -> None:
        if self._drain_timer is not None:
            self._drain_timer.cancel()
        self.health.close()
        await self.l4.clear()
        await self.l7.stop()
        await self.state_sync.stop()
