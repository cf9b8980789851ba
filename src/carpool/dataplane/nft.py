"""The L4 data plane as an nftables ruleset (pure: document + server health in, nft JSON out).

One table `ip carpool`, replaced as a whole in one `nft -j -f` transaction (atomic: the kernel
has the old ruleset or the new one). Per L4 virtual service, in chain `prerouting` (nat):

    ip daddr VIP tcp dport PORT counter dnat ip to <pick> map { i : server . port, ... }

<pick> is `numgen inc mod N` (rr; wrr repeats a server `weight` times) or `jhash ip saddr
mod N seed S` (sh, and any service with persistence: the same client always lands on the same
server, on both units alike and after ruleset changes that leave its pool as it was, so a
failover keeps clients where they were). Servers that are disabled, weight 0 or
down by health check are left out; with none left the service rejects (TCP reset) or sends
everything to its sorry server. Established connections are never touched by a ruleset change:
NAT is decided on a connection's first packet and kept by conntrack.
With `snat`, chain `postrouting` source-NATs the service's traffic to the servers (for servers
that do not route through the active unit).
"""
from __future__ import annotations

import ipaddress
import zlib

from ..config.document import Document, VirtualService

TABLE = "carpool"
FAMILY = "ip"


def _match(protocol: str, field: str, value) -> dict:
    return {"match": {"op": "==", "left": {"payload": {"protocol": protocol, "field": field}},
                      "right": value}}


def pool(vs: VirtualService, healthy) -> list[tuple[str, int, int]]:
    """(address, port, weight) of the servers that take new connections."""
    return [(rs.address, rs.port, rs.weight if vs.scheduler == "wrr" else 1)
            for rs in vs.real_server
            if rs.enabled and rs.weight > 0 and healthy(vs.name, rs.address, rs.port)]


def hash_seed(vs: VirtualService) -> int:
    """The kernel draws a random jhash seed at every ruleset load unless one is given: then
    each change (a health flip) and each unit would move persistent clients elsewhere. The
    service's name gives both units, and every load, the same seed."""
    return zlib.crc32(vs.name.encode())


def _pick(vs: VirtualService, servers: list[tuple[str, int, int]]) -> dict:
    slots = [(a, p) for a, p, w in servers for _ in range(w)]
    if vs.scheduler == "sh" or vs.persistence:
        key = {"jhash": {"expr": {"payload": {"protocol": "ip", "field": "saddr"}},
                         "mod": len(slots), "seed": hash_seed(vs)}}
    else:
        key = {"numgen": {"mode": "inc", "mod": len(slots)}}
    return {"map": {"key": key, "data": {"set": [[i, {"concat": [a, p]}]
                                                  for i, (a, p) in enumerate(slots)]}}}


def service_rule(vs: VirtualService, healthy) -> list[dict]:
    expr = [_match("ip", "daddr", vs.address), _match(vs.protocol, "dport", vs.port),
            {"counter": None}]
    servers = pool(vs, healthy)
    if servers:
        expr.append({"dnat": {"family": "ip", "addr": _pick(vs, servers)}})
    elif vs.when_down == "sorry" and vs.sorry_server:
        expr.append({"dnat": {"family": "ip", "addr": vs.sorry_server, "port": vs.port}})
    elif vs.protocol == "tcp":
        expr.append({"reject": {"type": "tcp reset"}})
    else:
        expr.append({"reject": {"type": "icmp", "expr": "port-unreachable"}})
    return expr


def snat_source(doc: Document, address: str) -> str | None:
    """The shared address in the real server's subnet (what it can answer to directly)."""
    target = ipaddress.IPv4Address(address)
    for iface in doc.interface:
        for cidr in iface.shared:
            if target in ipaddress.IPv4Interface(cidr).network:
                return cidr.split("/")[0]
    return None


def snat_rules(doc: Document, vs: VirtualService) -> list[list[dict]]:
    rules = []
    for rs in vs.real_server:
        source = snat_source(doc, rs.address)
        if source:
            rules.append([_match("ip", "daddr", rs.address), _match(vs.protocol, "dport", rs.port),
                          {"match": {"op": "in", "left": {"ct": {"key": "status"}},
                                     "right": "dnat"}},
                          {"snat": {"family": "ip", "addr": source}}])
    return rules


def ruleset(doc: Document, healthy=lambda vs, address, port: True) -> dict:
    """The whole nft JSON document that replaces table ip carpool."""
    table = {"family": FAMILY, "name": TABLE}
    # add + delete + add in one transaction: the table is replaced whole, atomically
    cmds: list[dict] = [{"add": {"table": dict(table)}}, {"delete": {"table": dict(table)}},
                        {"add": {"table": dict(table)}}]
    for name, hook, prio in (("prerouting", "prerouting", -100),
                             ("postrouting", "postrouting", 100)):
        cmds.append({"add": {"chain": {"family": FAMILY, "table": TABLE, "name": name,
                                       "type": "nat", "hook": hook, "prio": prio,
                                       "policy": "accept"}}})
    for vs in doc.virtual_service:
        if vs.type != "l4":
            continue
        cmds.append({"add": {"rule": {"family": FAMILY, "table": TABLE, "chain": "prerouting",
                                      "comment": vs.name, "expr": service_rule(vs, healthy)}}})
        if vs.snat:
            for expr in snat_rules(doc, vs):
                cmds.append({"add": {"rule": {"family": FAMILY, "table": TABLE,
                                              "chain": "postrouting", "comment": vs.name,
                                              "expr": expr}}})
    return {"nftables": cmds}
