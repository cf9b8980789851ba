"""Handing HTTP connections back to the old unit after a planned failover (a "second chance",
as GLB and Unimog do it): pure, the configuration in, nftables commands out.

A planned failover (`carpool failover`, SIGTERM) moves the shared addresses in milliseconds, but
the keep-alive connections open at that moment live in the old unit's HAProxy: their sockets
cannot move, and the new unit's kernel would answer their next packet with a reset. For
`ha.handover_drain` seconds after a bow-out:

- the new active unit **forwards**: a connection whose SYN it sees is its own (a bit in the
  conntrack mark, one per unit, since conntrackd copies marks); every other packet to an http
  service — a connection it never saw, or one conntrackd synced from the old unit — goes to the
  old unit: destination rewritten to the old unit's address on that link and a relay port of
  the service's own (RELAY_BASE + n, both units number the services alike). The old unit
  answers the client directly.
- the old unit **finishes**: before its connection tracking sees them, relayed packets get their
  service's address and port back; the address stays local on `lo` (the fence keeps it dark to
  ARP and neighbour discovery, and lets the finishing connections through: `@finishing`); its
  HAProxy reloads, so the old worker answers each connection's next request with `Connection:
  close` and the client opens its next connection to the new unit.

Every element that matches carries the period as its timeout: a unit that dies mid-handover
leaves nothing that still relays afterwards.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ..family import of

TABLE = "carpool_handover"
FAMILIES = ("ip", "ip6")
RELAY_BASE = 61000  # above Linux's default ephemeral ports (32768-60999)
RELAY_MAX = 4000
MARK = {"first": 0x01000000, "second": 0x02000000}  # "a connection this unit saw open"
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Pair:
    """An http service's listener, the relay port it gets and the link's unit addresses."""

    address: Address
    port: int
    relay: int
    own: Address
    partner: Address


def pairs(cfg) -> list[Pair]:
    """The http(s) listeners on shared addresses, numbered alike on both units (sorted)."""
    doc = cfg.document
    if doc is None:
        return []
    listeners: set[tuple[Address, int]] = set()
    for vs in doc.virtual_service:
        if vs.proxied:
            address = ipaddress.ip_address(vs.address)
            listeners.add((address, vs.port))
            if vs.redirect_http:
                listeners.add((address, 80))
    link = {c.ip: i for i in cfg.interfaces for c in i.shared}
    out = []
    ordered = sorted(listeners, key=lambda p: (p[0].version, int(p[0]), p[1]))
    for n, (address, port) in enumerate(ordered[:RELAY_MAX]):
        i = link.get(address)
        if i is None:
            continue
        if address.version == 4:
            own, partner = i.own4(cfg.role), i.partner4(cfg.role)
        else:
            own, partner = i.own6(cfg.role), i.partner6(cfg.role)
        if own is not None and partner is not None:
            out.append(Pair(address, port, RELAY_BASE + n, own, partner))
    return out


def _by_family(found: list[Pair]) -> dict[str, list[Pair]]:
    out: dict[str, list[Pair]] = {f: [] for f in FAMILIES}
    for p in found:
        out[of(p.address).nft].append(p)
    return out


def _fresh(family: str) -> list[str]:
    return [f"table {family} {TABLE} {{ }}", f"delete table {family} {TABLE}"]


def _timeout(seconds: float) -> str:
    return f"timeout {max(1, round(seconds * 1000))}ms"


def _tables(found: list[Pair], table) -> str:
    """Each family's table replaced: table(family, its nft address type, its pairs) when it has
    listeners, none otherwise."""
    lines: list[str] = []
    for family, mine in _by_family(found).items():
        lines += _fresh(family)
        if mine:
            lines.append(
                f"table {family} {TABLE} {{ {table(family, of(mine[0].address).nft_type, mine)} }}"
            )
    return "\n".join(lines) + "\n"


def forward_commands(found: list[Pair], mark: int, seconds: float) -> str:
    """The new active unit's tables: unknown connections' packets to the old unit."""

    def table(family: str, kind: str, mine: list[Pair]) -> str:
        t = _timeout(seconds)
        services = ", ".join(f"{p.address} . {p.port} {t}" for p in mine)
        relay = ", ".join(f"{p.address} . {p.port} : {p.relay}" for p in mine)
        partner = ", ".join(f"{p.relay} : {p.partner}" for p in mine)
        return (
            f"set services {{ type {kind} . inet_service ; flags timeout ; "
            f"elements = {{ {services} }} ; }} ; "
            f"map relay {{ type {kind} . inet_service : inet_service ; elements = {{ {relay} }} ; }} ; "
            f"map partner {{ type inet_service : {kind} ; elements = {{ {partner} }} ; }} ; "
            "counter handed_back { } ; "
            "chain prerouting { type filter hook prerouting priority mangle ; policy accept ; "
            f"{family} daddr . tcp dport != @services accept ; "
            f"ct state new tcp flags & (syn | ack) == syn ct mark set ct mark | {mark:#x} ; "
            f"ct mark & {mark:#x} == {mark:#x} accept ; "
            f"tcp dport set {family} daddr . tcp dport map @relay "
            f"{family} daddr set tcp dport map @partner counter name handed_back ; }} ;"
        )

    return _tables(found, table)


def finish_commands(found: list[Pair], seconds: float) -> str:
    """The old unit's tables: relayed packets get their service's address and port back before
    connection tracking (raw priority), so they meet the connections HAProxy holds."""

    def table(family: str, kind: str, mine: list[Pair]) -> str:
        t = _timeout(seconds)
        relayed = ", ".join(f"{p.own} . {p.relay} {t}" for p in mine)
        address = ", ".join(f"{p.relay} : {p.address}" for p in mine)
        port = ", ".join(f"{p.relay} : {p.port}" for p in mine)
        return (
            f"set relayed {{ type {kind} . inet_service ; flags timeout ; "
            f"elements = {{ {relayed} }} ; }} ; "
            f"map address {{ type inet_service : {kind} ; elements = {{ {address} }} ; }} ; "
            f"map port {{ type inet_service : inet_service ; elements = {{ {port} }} ; }} ; "
            "counter finished { } ; "
            "chain prerouting { type filter hook prerouting priority raw ; policy accept ; "
            f"{family} daddr . tcp dport @relayed "
            f"{family} daddr set tcp dport map @address tcp dport set tcp dport map @port "
            "counter name finished ; } ;"
        )

    return _tables(found, table)


def remove_commands() -> str:
    return "\n".join(line for family in FAMILIES for line in _fresh(family)) + "\n"


def counter_name(side: str) -> str:
    return "handed_back" if side == "forwarding" else "finished"
