"""The L4 data plane as an nftables ruleset (pure: document + server health in, nft JSON out).

Two tables, `ip carpool` for the IPv4 services and `ip6 carpool` for the IPv6 ones (an L4
service forwards within its family), replaced as a whole in one `nft -j -f` transaction (atomic:
the kernel has the old rulesets or the new ones). Per L4 virtual service, in chain `prerouting`
(nat), here in IPv4's words (IPv6's: ip6, icmpv6):

    ip daddr VIP tcp dport PORT counter dnat ip to <pick> map { i : server . port, ... }

<pick> is `numgen inc mod N` (rr; wrr repeats a server `weight` times) or `jhash ip saddr
mod N seed S` (sh: the same client lands on the same server, on both units alike and after
ruleset changes that leave the pool as it was). With `persistence` (seconds) a client goes back
to the server it had while it keeps coming within that time (per server a set of clients with a
timeout, refreshed by each new connection, carried over each ruleset load); a new client is
scheduled as above. Servers that are disabled, weight 0 or down by health check are left out
(their clients are scheduled anew); with none left the service rejects (TCP reset) or sends
everything to its sorry server. Established connections are never touched by a ruleset change:
NAT is decided on a connection's first packet and kept by conntrack.
With `snat`, chain `postrouting` source-NATs the service's traffic to the servers (for servers
that do not route through the active unit). A draining server past its service's drain timeout
(drain.py) gets a rule in chain `forward` that resets each of its flows on their next packet,
either way (UDP: port unreachable), while it stays drained.

Traffic per real server (statistics) is counted in tables `ip carpool_stats` and `ip6
carpool_stats`, chain `count` (filter, forward): the flow's original destination picks the
service's chain (a map by shared address, then the port), where named counters keyed by the
server's address and port count bytes each way and new flows — a map lookup per packet, not a
rule per server. Their own tables: loaded only when the services' servers change (not at each
health flip, which reloads the main tables), so the counters keep counting, and a thousand
services' 30,000 counters (a second of nft's time) stay off the path of every other change.
"""

from __future__ import annotations

import ipaddress
import zlib

from .. import family
from ..config.document import Document, VirtualService
from .drain import Drain

TABLE = "carpool"
STATS_TABLE = "carpool_stats"
FAMILY = family.IPV4.nft  # the IPv4 table's; FAMILIES: both
FAMILIES = tuple(f.nft for f in family.FAMILIES)
PERSIST_SIZE = 262144  # clients remembered per server; a full set schedules newcomers anew


def family_of(address: str) -> str:
    """The nftables family of an address: ip or ip6."""
    return family.of(address).nft


def _match(protocol: str, field: str, value) -> dict:
    return {
        "match": {
            "op": "==",
            "left": {"payload": {"protocol": protocol, "field": field}},
            "right": value,
        }
    }


def pool(vs: VirtualService, healthy) -> list[tuple[str, int, int]]:
    """(address, port, weight) of the servers that take new connections: none below the
    service's quorum (min_up), the first only with scheduler fixed."""
    up = [
        (rs.address, rs.port, rs.weight if vs.scheduler == "wrr" else 1)
        for rs in vs.real_server
        if rs.enabled and rs.weight > 0 and healthy(vs.name, rs.address, rs.port)
    ]
    if len(up) < vs.min_up:
        return []
    return up[:1] if vs.scheduler == "fixed" else up


def hash_seed(vs: VirtualService) -> int:
    """The kernel draws a random jhash seed at every ruleset load unless one is given: then
    each change (a health flip) and each unit would move hashed clients elsewhere. The
    service's name gives both units, and every load, the same seed."""
    return zlib.crc32(vs.name.encode())


def persist_set(vs: VirtualService, address: str, port: int) -> str:
    """Name of the set of clients that stick to one server of a service: stable while other
    servers and services change, so its members can be carried over a ruleset load."""
    return "persist_{:08x}".format(zlib.crc32(f"{vs.name}|{address}|{port}".encode()))


def _key(vs: VirtualService, slots: list) -> dict:
    if vs.scheduler == "sh":
        return {
            "jhash": {
                "expr": {"payload": {"protocol": family_of(vs.address), "field": "saddr"}},
                "mod": len(slots),
                "seed": hash_seed(vs),
            }
        }
    return {"numgen": {"mode": "inc", "mod": len(slots)}}


def _slots(servers: list[tuple[str, int, int]]) -> list[tuple[str, int]]:
    return [(a, p) for a, p, w in servers for _ in range(w)]


def _pick(vs: VirtualService, servers: list[tuple[str, int, int]]) -> dict:
    slots = _slots(servers)
    return {
        "map": {
            "key": _key(vs, slots),
            "data": {"set": [[i, {"concat": [a, p]}] for i, (a, p) in enumerate(slots)]},
        }
    }


def _down_verdict(vs: VirtualService) -> dict:
    f = family.of(vs.address)
    if vs.when_down == "sorry" and vs.sorry_server:
        return {"dnat": {"family": f.nft, "addr": vs.sorry_server, "port": vs.port}}
    if vs.protocol == "tcp":
        return {"reject": {"type": "tcp reset"}}
    return {"reject": {"type": f.icmp, "expr": "port-unreachable"}}


def service_rules(vs: VirtualService, healthy) -> list[list[dict]]:
    """The service's rules in chain prerouting (nat: only a connection's first packet)."""
    nft_family = family_of(vs.address)
    head = [_match(nft_family, "daddr", vs.address), _match(vs.protocol, "dport", vs.port)]
    servers = pool(vs, healthy)
    if not servers:
        return [head + [{"counter": None}, _down_verdict(vs)]]
    if not vs.persistence:
        return [
            head + [{"counter": None}, {"dnat": {"family": nft_family, "addr": _pick(vs, servers)}}]
        ]
    # Persistence with a timeout (like LVS): a client seen within `persistence` seconds goes
    # back to its server; a new one is scheduled as usual, its pick carried from the pick rule
    # to its server's rule in the packet mark (nft 1.0 cannot store a map lookup's result).
    saddr = {"payload": {"protocol": nft_family, "field": "saddr"}}
    number = {(a, p): n + 1 for n, (a, p, _w) in enumerate(servers)}  # 0: no mark set

    def to_server(match: dict, op: str, a: str, p: int) -> list[dict]:
        name = "@" + persist_set(vs, a, p)
        return head + [
            match,
            {"set": {"op": op, "elem": saddr, "set": name}},
            {"counter": None},
            {"dnat": {"family": nft_family, "addr": a, "port": p}},
        ]

    known = [
        to_server(
            {"match": {"op": "==", "left": saddr, "right": "@" + persist_set(vs, a, p)}},
            "update",
            a,
            p,
        )
        for a, p in number
    ]
    slots = _slots(servers)
    pick = head + [
        {
            "mangle": {
                "key": {"meta": {"key": "mark"}},
                "value": {
                    "map": {
                        "key": _key(vs, slots),
                        "data": {"set": [[n, number[s]] for n, s in enumerate(slots)]},
                    }
                },
            }
        }
    ]
    new = [
        to_server(
            {"match": {"op": "==", "left": {"meta": {"key": "mark"}}, "right": i}}, "add", a, p
        )
        for (a, p), i in number.items()
    ]
    return known + [pick] + new


def persist_sets(vs: VirtualService, healthy) -> list[str]:
    if vs.type != "l4" or not vs.persistence:
        return []
    return [persist_set(vs, a, p) for a, p, _w in pool(vs, healthy)]


def snat_source(doc: Document, address: str) -> str | None:
    """The shared address in the real server's subnet (what it can answer to directly)."""
    target = ipaddress.ip_address(address)
    for iface in doc.interface:
        for cidr in iface.shared:
            shared = ipaddress.ip_interface(cidr)
            if shared.version == target.version and target in shared.network:
                return str(shared.ip)
    return None


def snat_rules(doc: Document, vs: VirtualService) -> list[list[dict]]:
    rules = []
    for rs in vs.real_server:
        source = snat_source(doc, rs.address)
        if source:
            nft_family = family_of(rs.address)
            rules.append(
                [
                    _match(nft_family, "daddr", rs.address),
                    _match(vs.protocol, "dport", rs.port),
                    {"match": {"op": "in", "left": {"ct": {"key": "status"}}, "right": "dnat"}},
                    {"snat": {"family": nft_family, "addr": source}},
                ]
            )
    return rules


def _replace(nft_family: str, name: str) -> list[dict]:
    """add + delete + add in one transaction: the table is replaced whole, atomically."""
    table = {"family": nft_family, "name": name}
    return [
        {"add": {"table": dict(table)}},
        {"delete": {"table": dict(table)}},
        {"add": {"table": dict(table)}},
    ]


def _ct(key: str, direction: str, value) -> dict:
    left = {"ct": {"key": key, "dir": direction}}
    return {"match": {"op": "==", "left": left, "right": value}}


def cut_rule(vs: VirtualService, drain: Drain) -> list[dict]:
    """Resets the established flows of a service to a server whose drain ran out (chain
    forward: every packet of the flow, the client's and the server's)."""
    f = family.of(vs.address)
    if vs.protocol == "tcp":
        verdict: dict = {"reject": {"type": "tcp reset"}}
    else:
        verdict = {"reject": {"type": f.icmp, "expr": "port-unreachable"}}
    return [
        {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": vs.protocol}},
        _ct(f"{f.nft} daddr", "original", vs.address),
        _ct("proto-dst", "original", vs.port),
        _ct(f"{f.nft} saddr", "reply", drain.address),
        _ct("proto-src", "reply", drain.port),
        {"counter": None},
        verdict,
    ]


COUNTED = (("in", "bytes_in"), ("out", "bytes_out"), ("new", "connections"))


def counter_name(vs: VirtualService, address: str, port: int, what: str) -> str:
    """A named counter of one server of an L4 service: "in", "out" (bytes) or "new" (flows)."""
    return "t_{:08x}_{}".format(zlib.crc32(f"{vs.name}|{address}|{port}".encode()), what)


def traffic_counters(doc: Document) -> dict[tuple[str, str], tuple[str, str, str]]:
    """(nft family, counter name) -> (service, statistics key of the server, field)."""
    found = {}
    for vs in doc.virtual_service:
        if vs.type != "l4":
            continue
        for rs in vs.real_server:
            key = f"{vs.name}/{family.hostport(rs.address, rs.port)}"
            for what, field in COUNTED:
                name = counter_name(vs, rs.address, rs.port, what)
                found[(family_of(vs.address), name)] = (vs.name, key, field)
    return found


def _count_chain(f: str, services: list[VirtualService]) -> list[dict]:
    """The counters, chain `count` and its per-address and per-service chains of one family."""
    cmds: list[dict] = []

    def add(kind: str, **body) -> None:
        cmds.append({"add": {kind: {"family": f, "table": STATS_TABLE, **body}}})

    chain = {"type": "filter", "hook": "forward", "prio": -10, "policy": "accept"}
    add("chain", name="count", **chain)
    by_address: dict[str, list[VirtualService]] = {}
    for vs in services:
        by_address.setdefault(vs.address, []).append(vs)
    jumps = []
    for n, (address, group) in enumerate(by_address.items()):
        add("chain", name=f"vip_{n}")
        jumps.append([address, {"jump": {"target": f"vip_{n}"}}])
        for vs in group:
            svc = f"svc_{zlib.crc32(vs.name.encode()):08x}"
            add("chain", name=svc)
            add(
                "rule",
                chain=f"vip_{n}",
                expr=[
                    {
                        "match": {
                            "op": "==",
                            "left": {"meta": {"key": "l4proto"}},
                            "right": vs.protocol,
                        }
                    },
                    _ct("proto-dst", "original", vs.port),
                    {"jump": {"target": svc}},
                ],
            )
            servers = {(rs.address, rs.port): rs for rs in vs.real_server}
            for what, match, side in (
                ("in", {"ct": {"key": "direction"}}, "d"),
                ("out", {"ct": {"key": "direction"}}, "s"),
                ("new", {"ct": {"key": "state"}}, "d"),
            ):
                for address_, port in servers:
                    add("counter", name=counter_name(vs, address_, port, what))
                right = {"in": "original", "out": "reply", "new": "new"}[what]
                op = "in" if what == "new" else "=="
                key = {
                    "concat": [
                        {"payload": {"protocol": f, "field": side + "addr"}},
                        {"payload": {"protocol": "th", "field": side + "port"}},
                    ]
                }
                pairs = [[{"concat": [a, p]}, counter_name(vs, a, p, what)] for a, p in servers]
                add(
                    "rule",
                    chain=svc,
                    expr=[
                        {"match": {"op": op, "left": match, "right": right}},
                        {"counter": {"map": {"key": key, "data": {"set": pairs}}}},
                    ],
                )
    vmap = {"key": {"ct": {"key": f"{f} daddr", "dir": "original"}}, "data": {"set": jumps}}
    add("rule", chain="count", expr=[{"vmap": vmap}])
    return cmds


def ruleset(
    doc: Document,
    healthy=lambda vs, address, port: True,
    cut: frozenset[Drain] = frozenset(),
) -> dict:
    """The whole nft JSON document that replaces tables ip carpool and ip6 carpool; `cut`:
    the draining servers whose timeout ran out."""
    cmds: list[dict] = []
    # chain forward only while it cuts: an empty filter hook would still see every packet
    cutting = {
        family_of(v.address)
        for v in doc.virtual_service
        if v.type == "l4" and any(d.key == v.name for d in cut)
    }
    for nft_family in FAMILIES:
        cmds += _replace(nft_family, TABLE)
        for name, kind, prio in (
            ("prerouting", "nat", -100),
            ("postrouting", "nat", 100),
            *([("forward", "filter", 0)] if nft_family in cutting else []),
        ):
            chain = {"name": name, "type": kind, "hook": name, "prio": prio, "policy": "accept"}
            cmds.append({"add": {"chain": {"family": nft_family, "table": TABLE, **chain}}})
    for vs in doc.virtual_service:
        if vs.type != "l4":
            continue
        nft_family = family_of(vs.address)

        def rule(
            chain: str, expr: list[dict], vs: VirtualService = vs, f: str = nft_family
        ) -> dict:
            return {
                "add": {
                    "rule": {
                        "family": f,
                        "table": TABLE,
                        "chain": chain,
                        "comment": vs.name,
                        "expr": expr,
                    }
                }
            }

        for name in persist_sets(vs, healthy):
            cmds.append(
                {
                    "add": {
                        "set": {
                            "family": nft_family,
                            "table": TABLE,
                            "name": name,
                            "type": family.of(vs.address).nft_type,
                            "flags": ["timeout"],
                            "timeout": vs.persistence,
                            "size": PERSIST_SIZE,
                        }
                    }
                }
            )
        cmds += [rule("prerouting", expr) for expr in service_rules(vs, healthy)]
        if vs.snat:
            cmds += [rule("postrouting", expr) for expr in snat_rules(doc, vs)]
        cmds += [
            rule("forward", cut_rule(vs, d))
            for d in sorted(cut, key=lambda d: (d.address, d.port))
            if d.key == vs.name
        ]
    return {"nftables": cmds}


def stats_ruleset(doc: Document) -> dict:
    """The whole nft JSON document that replaces tables ip/ip6 carpool_stats (the per-server
    traffic counters of the L4 services; the tables are left empty when there are none)."""
    cmds: list[dict] = []
    for nft_family in FAMILIES:
        cmds += _replace(nft_family, STATS_TABLE)
        counted = [
            v
            for v in doc.virtual_service
            if v.type == "l4" and v.real_server and family_of(v.address) == nft_family
        ]
        if counted:
            cmds += _count_chain(nft_family, counted)
    return {"nftables": cmds}


def persisted(listing: dict) -> dict[str, list[tuple[str, int]]]:
    """Members of the persistence sets in a `nft -j list table` answer: set -> [(client,
    seconds left)]."""
    found: dict[str, list[tuple[str, int]]] = {}
    for item in listing.get("nftables", []):
        st = item.get("set")
        if not st or not str(st.get("name", "")).startswith("persist_"):
            continue
        members = found.setdefault(st["name"], [])
        for e in st.get("elem", []):
            e = e.get("elem", e) if isinstance(e, dict) else {"val": e}
            if isinstance(e.get("val"), str):
                members.append((e["val"], int(e.get("expires", st.get("timeout", 0)))))
    return found


def carry_over(ruleset_doc: dict, members: dict[str, list[tuple[str, int]]]) -> dict:
    """The ruleset plus the clients of its persistence sets that the running one remembers
    (sets of servers gone or down are not in the new ruleset: their clients are scheduled anew).
    """
    cmds = list(ruleset_doc["nftables"])
    for c in ruleset_doc["nftables"]:
        st = c.get("add", {}).get("set")
        if not st or not members.get(st["name"]):
            continue
        elems = [
            {
                "elem": {
                    "val": client,
                    "timeout": st["timeout"],
                    "expires": max(1, min(left, st["timeout"])),
                }
            }
            for client, left in members[st["name"]]
        ]
        cmds.append(
            {
                "add": {
                    "element": {
                        "family": st["family"],
                        "table": TABLE,
                        "name": st["name"],
                        "elem": elems,
                    }
                }
            }
        )
    return {"nftables": cmds}
