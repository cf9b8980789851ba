"""What the web side and the doctor may see of the unit and ask of it — and nothing else: they
get this view, never the daemon."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from ..config.document import Document
from ..config.ha import Config
from .paths import IfaceState


@dataclass
class UnitView:
    config: Callable[[], Config]  # the running configuration
    status: Callable[[], dict]  # `carpool status`
    ha_state: Callable[[], str]  # "init", "backup", "master"
    version: Callable[[], tuple[int, str]]  # the current document's (version, hash)
    document: Callable[[], Document]
    handlers: Callable[[], dict[str, Callable]]  # the control socket's config.* handlers
    failover: Callable[[dict], dict]
    doctor: Callable[[], Awaitable[dict]]
    servers: Callable[[], list[dict]]  # real servers' health
    dataplane_counters: Callable[[], Awaitable[tuple[list, list]]]
    stats: Callable[[], Any]  # dataplane.stats.Stats: traffic per service and server
    # for the doctor: the paths to the partner and the unit's other channels
    paths: Callable[[], dict[str, IfaceState]]
    advert_paths: Callable[[], list[str]]  # advert sockets: interfaces, `<name>/ipv6`
    now: Callable[[], float]  # the loop's (monotonic) time
    held: Callable[[], list[str]]
    is_partner: Callable[[IPv4Address | IPv6Address], bool]
    send_probe: Callable[[bytes], dict[str, int]]  # on every advert path: sent per path
    partner_ha: Callable[[], dict | None]  # what the partner said on 6973
    sync_port: Callable[[], int]
    probe_sync: Callable[[], Awaitable[Any]]  # try the partner's sync port
    ask_doctor: Callable[[str], bool]  # the partner's report over 6973 too

    @property
    def cfg(self) -> Config:
        return self.config()

    def is_active(self) -> bool:
        return self.ha_state() == "master"
