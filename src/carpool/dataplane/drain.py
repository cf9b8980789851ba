"""Draining real servers and their drain timeout (pure: documents and times in, what to cut out).

A real server with `weight = 0` or `enabled = false` is draining: it gets no new connections and
its established ones finish. With the service's `drain_timeout` (s, 0 = no limit) the ones still
open that long after the drain began are cut: L4 flows are reset on their next packet (a rule
the ruleset carries while the server stays drained), HAProxy's sessions are shut down.

    drains = Drains()
    drains.update(doc, now)   # a new document: draining servers start their clocks
    drains.expired(now)       # {Drain, ...} past their timeout (the L4 ruleset's cut)
    drains.deadline()         # when the next one runs out (None: none will)

A server drains from when this unit first saw it draining: both units apply each version, so
after a takeover the new active unit cuts at about the same time.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config.document import Document


@dataclass(frozen=True)
class Drain:
    """One draining server of a group (`key`: the service, or "service:pool")."""

    service: str
    key: str
    address: str
    port: int
    timeout: int  # s; 0 = never cut


def draining(doc: Document) -> set[Drain]:
    return {
        Drain(vs.name, key, rs.address, rs.port, vs.drain_timeout)
        for vs in doc.virtual_service
        for key, group in vs.groups()
        for rs in group.real_server
        if rs.weight == 0 or not rs.enabled
    }


class Drains:
    def __init__(self) -> None:
        self.since: dict[Drain, float] = {}

    def update(self, doc: Document, now: float) -> None:
        """Servers draining in `doc` keep their start (or start now); the rest are forgotten
        (a server back in the pool drains afresh next time)."""
        self.since = {d: self.since.get(d, now) for d in draining(doc)}

    def expired(self, now: float) -> frozenset[Drain]:
        return frozenset(d for d, t in self.since.items() if d.timeout and now >= t + d.timeout)

    def deadline(self, now: float) -> float | None:
        """The next time a drain runs out after `now` (None: no other will)."""
        ahead = [t + d.timeout for d, t in self.since.items() if d.timeout]
        ahead = [t for t in ahead if t > now]
        return min(ahead) if ahead else None
