"""HA checks on every enabled interface: link state (from node/links.py), the partner's echo
(its status in the WUI) and each interface's ping target; what fails is a demote reason."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from .. import events
from ..config.ha import Config, Interface
from .icmp import Pinger
from .paths import Paths

log = events.logger("carpool.daemon", events.Kind.DAEMON)
PING_MISSES = 3  # consecutive misses before a ping check fails: one lost echo is no outage
PARTNER_EVERY = 1.0  # s between echoes to the partner (status only: they demote nothing)


class Checks:
    def __init__(self, cfg: Config, paths: Paths, on_change: Callable[[], None]):
        """on_change(): the demote reasons may have changed."""
        self.cfg, self.paths, self.on_change = cfg, paths, on_change

    def reasons(self) -> list[str]:
        reasons = []
        for iface in self.cfg.checked:
            st = self.paths[iface.name]
            if not st.link_up:
                reasons.append(f"{iface.name}: link down")
            elif st.target_ok is False:
                reasons.append(f"{iface.name}: ping target {iface.ping_target} silent")
        return reasons

    def on_link(self, ifname: str, up: bool) -> None:
        st = self.paths.get(ifname)
        if st is None or st.link_up == up:
            return
        st.link_up = up
        log.info("%s: link %s", ifname, "up" if up else "down")
        self.on_change()

    async def ping_loop(self, pinger: Pinger, now: Callable[[], float]) -> None:
        """Partner status (for the WUI) and check targets, once per ping_interval."""
        next_partner = 0.0
        while True:
            jobs = []
            if now() >= next_partner:
                next_partner = now() + PARTNER_EVERY
                jobs += [self._ping_partner(pinger, i) for i in self.cfg.interfaces]
            targets = [i for i in self.cfg.checked if i.ping_target is not None]
            jobs += [self._ping_target(pinger, i) for i in targets]
            await asyncio.gather(*jobs)
            await asyncio.sleep(min([PARTNER_EVERY] + [i.ping_interval for i in targets]))

    async def _ping_partner(self, pinger: Pinger, iface: Interface) -> None:
        rtt = await pinger.ping(str(iface.partner(self.cfg.role)), 0.9)
        st = self.paths[iface.name]
        st.ping_rtt, st.ping_ok = rtt, rtt is not None

    async def _ping_target(self, pinger: Pinger, iface: Interface) -> None:
        rtt = await pinger.ping(str(iface.ping_target), min(1.0, iface.ping_interval))
        st = self.paths[iface.name]
        st.target_misses = 0 if rtt is not None else st.target_misses + 1
        ok = st.target_misses < PING_MISSES
        if ok != st.target_ok:
            st.target_ok = ok
            if not ok:
                log.warning("%s: ping target %s silent", iface.name, iface.ping_target)
            self.on_change()
