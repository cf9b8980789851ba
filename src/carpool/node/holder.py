"""Holding the shared addresses: the fence says which serve (in the loop, at once), the netlink
queue (node/shared.py) keeps the kernel's addresses and their lifetimes in step behind it, and
a gratuitous ARP burst announces them. The election's address effects land here."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from ipaddress import IPv4Address, IPv6Address

from .. import events
from ..config.ha import Config
from . import addresses
from .fence import Fence, fence_timeout
from .shared import LOOPBACK, SharedAddresses

log = events.logger("carpool.daemon", events.Kind.ADDRESSES)
# Kernel lifetime of a held shared address, renewed every LIFETIME_RENEW s while active: the
# backstop that removes a dead unit's addresses (the fence darkens them long before).
ADDRESS_LIFETIME = 3
LIFETIME_RENEW = 1.0
WEDGED = "netlink: the shared addresses could not be renewed"


class AddressHolder:
    def __init__(
        self, cfg: Config, advert_interval: float, now: Callable[[], float], rt_priority: int = 0
    ):
        self.now = now
        self.fence = Fence(fence_timeout(advert_interval))
        self.shared = SharedAddresses(rt_priority=rt_priority)  # the loop is set in attach()
        self._renewed = float("-inf")  # when the held addresses' kernel lifetime was renewed
        self._ips_of: Config | None = None
        self._ips: list[IPv4Address | IPv6Address] = []
        self.configure(cfg, advert_interval)

    def configure(self, cfg: Config, advert_interval: float) -> None:
        self.cfg = cfg
        self.fence.timeout = fence_timeout(advert_interval)

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self.shared.loop = loop

    @property
    def ips(self) -> list[IPv4Address | IPv6Address]:
        if self._ips_of is not self.cfg:  # one list per configuration: the fence sorts it once
            self._ips_of = self.cfg
            self._ips = [c.ip for i in self.cfg.interfaces for c in i.shared]
        return self._ips

    @property
    def held(self) -> list[str]:
        return self.shared.held

    @property
    def vmac(self) -> str | None:
        return self.cfg.vmac_address if self.cfg.vmac else None

    def _items(self) -> list[tuple[str, str]]:
        return [(i.name, str(c)) for i in self.cfg.interfaces for c in i.shared]

    # -- the election's effects ------------------------------------------------------------
    def take(self, announce: bool = True) -> None:
        """Hold every shared address; with announce, each one's gratuitous ARP/NA burst goes
        out right after its add (not after the last address's)."""
        # Live in the fence first: the first packets to an address just added must pass.
        self.fence.hold(self.ips, self.now(), force=True)
        self._renewed = self.now()
        count = self.cfg.garp_count if announce else 0
        self.shared.take(self._items(), self.vmac, ADDRESS_LIFETIME, count)

    def release(self, local: Sequence[str] = (), lifetime: int = 0) -> None:
        """local: addresses (/32, /128) kept on `lo` for `lifetime` s (a handover)."""
        self.fence.release()  # dark at once; the netlink removals follow on their thread
        self.shared.release(self._items(), self.vmac, local, lifetime)

    def announce(self) -> None:
        self.shared.garp(self._items(), self.vmac, self.cfg.garp_count)

    def keep_alive(self) -> bool:
        """The active unit, each advert: the fence keeps the held addresses serving for another
        timeout; once a second their kernel lifetime is renewed (which re-adds one that went).
        True when a renewal was asked for (the caller then re-checks `reasons`)."""
        now = self.now()
        self.fence.hold(self.ips, now)
        if now - self._renewed < LIFETIME_RENEW:
            return False
        self._renewed = now
        self.shared.renew(self._items(), self.vmac, ADDRESS_LIFETIME)
        return True

    def reasons(self) -> list[str]:
        """A demote reason while netlink is wedged: our addresses are going, so we must not
        keep advertising them."""
        return [WEDGED] if self.shared.wedged(ADDRESS_LIFETIME) else []

    # -- configuration and life cycle ------------------------------------------------------
    def reconfigure(self, old: Config, new: Config, advert_interval: float, active: bool) -> None:
        """A new version: fence the new set, drop what went, hold the rest if active."""
        gone = {(i.name, str(c)) for i in old.interfaces for c in i.shared} - {
            (i.name, str(c)) for i in new.interfaces for c in i.shared
        }
        self.configure(new, advert_interval)
        self.fence.install(self.ips)
        if gone:
            self.shared.forget(
                [c for _, c in gone], sorted(gone), old.vmac_address if old.vmac else None
            )
        if active:
            self.take(announce=True)

    async def start(self) -> None:
        remove_shared_addresses(self.cfg)  # a starting unit first clears stale shared addresses
        self.fence.install(self.ips)
        self.shared.warm_up()  # the first takeover must not pay for pyroute2's set-up
        if not await self.shared.drain(10.0):
            log.warning("netlink warm-up still running after 10 s")

    async def stop(self) -> None:
        await self.shared.drain(2.0)  # the release queued by Shutdown, in order
        remove_shared_addresses(self.cfg)  # and whatever a stuck queue left
        self.shared.close()
        self.fence.remove()

    def status(self) -> dict:
        return {"fence": self.fence.status(), "addresses": self.shared.status()}


def remove_shared_addresses(cfg: Config) -> bool:
    """Every shared address off this unit, and its macvlans: the addresses on all interfaces
    first (quick), then the links (a link's deletion waits for an RCU grace period)."""
    ok = True
    vmac = cfg.vmac_address if cfg.vmac else None
    shared = [(i.name, [str(c) for c in i.shared]) for i in cfg.interfaces if i.shared]
    for ifname, cidrs in shared:
        try:
            addresses.withdraw(ifname, cidrs)
        except OSError as e:
            log.error("cannot remove shared addresses on %s: %s", ifname, e)
            ok = False
    for ifname, cidrs in shared:
        try:
            addresses.remove_stale(ifname, cidrs, vmac)
        except OSError as e:
            log.error("cannot remove shared addresses on %s: %s", ifname, e)
            ok = False
    try:  # a handover's (node/handover.py), when a stop or a crash cut it short
        addresses.withdraw(LOOPBACK, [c for _, cidrs in shared for c in cidrs])
    except OSError as e:
        log.error("cannot remove shared addresses on %s: %s", LOOPBACK, e)
        ok = False
    return ok
