"""The partner ports: config sync (TCP 6973), HAProxy's peers (TCP 6974), conntrackd (UDP
3780) and the fast detector (UDP 6975) answer the partner only, and only on the links meant
for them.

    table ip carpool_guard (and table ip6 carpool_guard, the same with the IPv6 addresses)
        set sync      { ifname . ipv4_addr }  every interface . the partner's address on it
        set peers     { ifname . ipv4_addr }  the heartbeat link(s)
        set conntrack { ifname . ipv4_addr }  the heartbeat link(s) and the other checked links
        set liveness  { ifname . ipv4_addr }  the heartbeat link and the other checked links
        chain input   (priority -10): a packet to one of the ports from any other interface .
                      source is counted and dropped; loopback (the unit's own tools) passes

A host on a client segment cannot open a connection to 6973 (the daemon's handshake would
refuse it, but it would cost a socket and a deadline), and cannot reach conntrackd's
unauthenticated UDP or HAProxy's peers at all. Pure commands here; the daemon applies them at
start and on each new configuration, and removes the table at a clean stop.
"""

from __future__ import annotations

from .. import events
from ..config.ha import Config, Interface
from ..dataplane import conntrack, haproxy
from ..dataplane.conntrack import PORT as CONNTRACK_PORT
from ..dataplane.haproxy import PEERS_PORT
from ..family import FAMILIES, IPV4, Family
from ..ha.liveness import PORT as LIVENESS_PORT
from .liveness import off_reason
from .nft import NftCommands

log = events.logger("carpool.guard", events.Kind.DAEMON)
TABLE = "carpool_guard"


def _elements(cfg: Config, ifaces: list[Interface], f: Family) -> str:
    found = set()
    for i in ifaces:
        partner = i.partner4(cfg.role) if f is IPV4 else i.partner6(cfg.role)
        if partner is not None:
            found.add((i.name, str(partner)))
    return ", ".join(f'"{name}" . {address}' for name, address in sorted(found))


def links(cfg: Config) -> dict[str, list[Interface]]:
    """Per port kind, the interfaces the partner may use for it: as the owners of those ports
    configure them (none when they are off)."""
    by_name = {i.name: i for i in cfg.interfaces}
    synced = conntrack.wanted(cfg)
    return {
        "sync": list(cfg.interfaces),
        "peers": list(cfg.heartbeats[:1]) if haproxy.peers(cfg)[1] else [],
        "conntrack": [by_name[name] for name, _own, _partner in synced[0]] if synced else [],
        "liveness": [] if off_reason(cfg) else [i for i in cfg.interfaces if i.check],
    }


def install_commands(cfg: Config, sync_port: int) -> str:
    """The guard tables (IPv4 and IPv6), replaced as a whole."""
    ports = {
        "sync": f"tcp dport {sync_port}",
        "peers": f"tcp dport {PEERS_PORT}",
        "conntrack": f"udp dport {CONNTRACK_PORT}",
        "liveness": f"udp dport {LIVENESS_PORT}",
    }
    out = []
    for f in FAMILIES:
        sets, rules = [], []
        for kind, ifaces in links(cfg).items():
            elements = _elements(cfg, ifaces, f)
            body = f" elements = {{ {elements} }} ;" if elements else ""
            sets.append(f"set {kind} {{ type ifname . {f.nft_type} ;{body} }} ;")
            rules.append(
                f"{ports[kind]} iifname . {f.nft} saddr != @{kind} counter drop comment "
                f'"{kind}: not the partner on its link" ;'
            )
        chain = (
            "chain input { type filter hook input priority -10; policy accept; "
            'iifname "lo" accept ; ' + " ".join(rules) + " }"
        )
        out.append(
            f"table {f.nft} {TABLE} {{ }}\ndelete table {f.nft} {TABLE}\n"
            f"table {f.nft} {TABLE} {{ {' '.join(sets)} {chain} ; }}\n"
        )
    return "".join(out)


class Guard:
    def __init__(self) -> None:
        self.installed = False
        self._nft = NftCommands(log, "partner ports guard")

    def install(self, cfg: Config, sync_port: int) -> None:
        self.installed = self._nft.run(install_commands(cfg, sync_port))
        if not self.installed:
            log.error(
                "the partner ports (%d, %d, %d) stay open to every host: %s",
                sync_port,
                PEERS_PORT,
                CONNTRACK_PORT,
                self._nft.last_error,
            )

    def remove(self) -> None:
        if self.installed:
            self._nft.run(
                "".join(
                    f"table {f.nft} {TABLE} {{ }}\ndelete table {f.nft} {TABLE}\n" for f in FAMILIES
                )
            )
            self.installed = False

    def status(self) -> dict:
        return {"installed": self.installed, "last_error": self._nft.last_error}
