"""What this unit knows of each interface and of the partner behind it: written by the advert
receiver (node/advert.py) and the checks (node/checks.py), read by status and the doctor."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class IfaceState:
    link_up: bool = True
    last_advert: float | None = None  # monotonic time of the last valid partner advert
    adverts_heard: int = 0
    ping_rtt: float | None = None  # partner ICMP
    ping_ok: bool | None = None
    target_misses: int = 0  # check ping target
    target_ok: bool | None = None


Paths = dict[str, IfaceState]  # by interface name
