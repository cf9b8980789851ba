"""HA checks on every enabled interface: link state (from node/links.py), the partner's echo
(its status in the WUI) and each interface's ping target; what fails is a demote reason."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial

from .. import events
from ..config.ha import Config, Interface
from .icmp import Pinger
from .paths import IfaceState, Paths

log = events.logger("carpool.daemon", events.Kind.DAEMON)
PING_MISSES = 3  # consecutive misses before a ping check fails: one lost echo is no outage
PARTNER_EVERY = 1.0  # s between echoes to the partner (status only: they demote nothing)
PARTNER_SLACK = 0.5  # s they may wait for an advert turn to ride on (node/rides.py)


def _heard(st: IfaceState, rtt: float) -> None:
    st.ping_rtt, st.ping_ok = rtt, True


class Checks:
    def __init__(self, cfg: Config, paths: Paths, on_change: Callable[[], None]):
        """on_change(): the demote reasons may have changed."""
        self.cfg, self.paths, self.on_change = cfg, paths, on_change
        self._echoes: list[tuple[int, str]] = []  # (seq, interface) of the round out
        self._reconfigured = asyncio.Event()

    def configure(self, cfg: Config) -> None:
        self.cfg = cfg
        self._reconfigured.set()  # a ping target may have come

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

    def echo_partner(self, pinger: Pinger) -> None:
        """The partner's status on each interface (for the WUI): an echo on each, once per
        PARTNER_EVERY, ridden on the advert turns. A reply sets the path's rtt as it comes;
        an echo still unanswered when the next round goes out was lost. No task, future or
        timer per echo: the round is what the loop's advert turn does anyway."""
        for seq, name in self._echoes:
            st = self.paths.get(name)
            if pinger.forget(seq) and st is not None:
                st.ping_rtt, st.ping_ok = None, False
        self._echoes = []
        for iface in self.cfg.interfaces:
            st = self.paths[iface.name]
            sent = pinger.echo(str(iface.partner(self.cfg.role)), partial(_heard, st))
            if sent is None:
                st.ping_rtt, st.ping_ok = None, False
            else:
                self._echoes.append((sent, iface.name))

    async def ping_loop(self, pinger: Pinger) -> None:
        """The check targets, each once per its ping_interval (a demote reason: on a timer
        of their own); asleep until a new configuration while no interface has one."""
        while True:
            targets = [i for i in self.cfg.checked if i.ping_target is not None]
            if not targets:
                self._reconfigured.clear()
                await self._reconfigured.wait()
                continue
            await asyncio.gather(*[self._ping_target(pinger, i) for i in targets])
            await asyncio.sleep(min(i.ping_interval for i in targets))

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
