"""Traffic statistics per virtual service and per real server (pure): totals read from HAProxy's
`show stat` and the L4 rules' counters turned into rates, kept in two bounded rings — the last
hour at 5 s and the last day at 1 min.

    stats = Stats()
    stats.add(now, samples)     # {key: {field: total or gauge}} as read at `now`
    stats.series("web", "1h")   # [(time, {field: rate or gauge}), ...] oldest first

A key is a service (`web`) or one of its servers (`web/198.18.2.101:80`, a pool's
`web:api/198.18.2.103:8080`). Counters are totals since HAProxy (or the ruleset) started: a
total lower than the one before means it restarted (a reload), and the new total is what
happened since. Rates are per second over the interval between two samples.
"""

from __future__ import annotations

import collections
import math
from array import array
from collections.abc import Iterable
from typing import Any

from ..config.document import Document
from ..family import hostport
from .nft import traffic_counters

# totals that only grow (rates are shown), and gauges (shown as they are)
COUNTERS = (
    "connections",
    "requests",
    "bytes_in",
    "bytes_out",
    "http_1xx",
    "http_2xx",
    "http_3xx",
    "http_4xx",
    "http_5xx",
    "health_flips",
)
GAUGES = ("current", "response_ms", "up")
RANGES = {"1h": (5.0, 720), "24h": (60.0, 1440)}  # step s, points
# Bounded memory: a service keeps both rings (~110 KB), a server the hour's only (~30 KB);
# past these counts (an enormous document) the rest is not sampled: ~110 MB at the most.
MAX_SERVICES = 512
MAX_SERVERS = 2048


Point = tuple[float, dict[str, float]]


class Ring:
    """The last `size` points of one key, compact: times as doubles and each field's values as
    floats in fixed arrays (what a dict per point would take ten times over)."""

    __slots__ = ("size", "times", "values", "next", "count")

    def __init__(self, size: int, fields: Iterable[str]):
        self.size, self.next, self.count = size, 0, 0
        self.times = array("d", bytes(8 * size))
        self.values = {f: array("f", bytes(4 * size)) for f in sorted(fields)}

    def append(self, t: float, point: dict[str, float]) -> None:
        i = self.next
        self.times[i] = t
        for name, values in self.values.items():
            values[i] = point.get(name, math.nan)
        self.next, self.count = (i + 1) % self.size, min(self.count + 1, self.size)

    def points(self) -> list[Point]:
        first = (self.next - self.count) % self.size
        out = []
        for k in range(self.count):
            i = (first + k) % self.size
            point = {n: float(v[i]) for n, v in self.values.items() if not math.isnan(v[i])}
            out.append((self.times[i], point))
        return out

    def last(self) -> dict[str, float]:
        return self.points()[-1][1] if self.count else {}


class Stats:
    ranges = RANGES  # the web side reads them here (it does not import the data plane)

    def __init__(self) -> None:
        self.rings: dict[str, dict[str, Ring]] = {}
        self._last: dict[str, tuple[float, dict[str, float]]] = {}  # the previous totals
        self._minute: dict[str, list[dict[str, float]]] = {}  # fine points of the open minute
        self._minute_start: float | None = None

    def add(self, now: float, samples: dict[str, dict[str, float]]) -> None:
        """One reading of every key: its rates since the previous reading go into the hour's
        ring; each minute the average of its points into the day's."""
        for key in [k for k in self.rings if k not in samples]:
            del self.rings[key]  # a service or server that went: its history goes too
            self._last.pop(key, None)
            self._minute.pop(key, None)
        if self._minute_start is None:
            self._minute_start = now
        close_minute = now - self._minute_start >= RANGES["24h"][0]
        services = [k for k in samples if "/" not in k][:MAX_SERVICES]
        servers = [k for k in samples if "/" in k][:MAX_SERVERS]
        for key in services + servers:
            values = samples[key]
            previous = self._last.get(key)
            self._last[key] = (now, values)
            if previous is None or now <= previous[0]:
                continue  # a rate needs two readings
            point = _rates(values, previous[1], now - previous[0])
            rings = self.rings.get(key)
            if rings is None:
                spans = RANGES if "/" not in key else {"1h": RANGES["1h"]}  # servers: the hour
                rings = self.rings[key] = {s: Ring(n, point) for s, (_step, n) in spans.items()}
            rings["1h"].append(now, point)
            if "24h" in rings:
                self._minute.setdefault(key, []).append(point)
        if close_minute:
            for key, points in self._minute.items():
                if key in self.rings and points:
                    self.rings[key]["24h"].append(now, _average(points))
            self._minute, self._minute_start = {}, now

    def series(self, key: str, span: str = "1h") -> list[Point]:
        ring = self.rings.get(key, {}).get(span)
        return ring.points() if ring is not None else []

    def latest(self, key: str) -> dict[str, float]:
        ring = self.rings.get(key, {}).get("1h")
        return ring.last() if ring is not None else {}

    def names(self) -> list[str]:
        return sorted(self.rings)

    def as_json(self, span: str, keys: Iterable[str] | None = None) -> dict[str, Any]:
        """The API's form: {key: [[time, {field: value}], ...]}."""
        return {k: [[t, p] for t, p in self.series(k, span)] for k in (keys or self.names())}


def _rates(values: dict[str, float], before: dict[str, float], dt: float) -> dict[str, float]:
    out = {}
    for name, value in values.items():
        if name in GAUGES:
            out[name] = value
        elif name in COUNTERS:
            delta = value - before.get(name, 0.0)
            out[name] = (value if delta < 0 else delta) / dt  # lower: restarted at 0
    return out


def _average(points: list[dict[str, float]]) -> dict[str, float]:
    names = {n for p in points for n in p}
    return {n: sum(p.get(n, 0.0) for p in points) / len(points) for n in names}


def _num(row: dict, field: str) -> float:
    try:
        return float(row.get(field) or 0)
    except ValueError:
        return 0.0


def _http(row: dict) -> dict[str, float]:
    out = {
        "connections": _num(row, "stot"),
        "current": _num(row, "scur"),
        "bytes_in": _num(row, "bin"),
        "bytes_out": _num(row, "bout"),
    }
    for c in "12345":
        out[f"http_{c}xx"] = _num(row, f"hrsp_{c}xx")
    return out


def samples(
    doc: Document,
    haproxy: Iterable[dict],
    l4: dict[str, dict[str, float]],
    health: Iterable[dict],
) -> dict[str, dict[str, float]]:
    """One reading for every service and server of the document, from HAProxy's rows
    (`show stat`), the L4 data plane's (l4_traffic), and the health states."""
    rows = {(r.get("pxname"), r.get("svname")): r for r in haproxy}
    checked = {(h["service"], h["address"], h["port"]): h for h in health}
    out: dict[str, dict[str, float]] = {}
    for vs in doc.virtual_service:
        if vs.proxied:
            front = rows.get((f"fe_{vs.name}", "FRONTEND"), {})
            back = rows.get((f"be_{vs.name}", "BACKEND"), {})
            out[vs.name] = {
                **_http(front),
                "requests": _num(front, "req_tot"),
                "response_ms": _num(back, "rtime"),
            }
        else:
            out[vs.name] = dict(l4.get(vs.name, {}))
        for key, group in vs.groups():
            for n, rs in enumerate(group.real_server):
                name = f"{key}/{hostport(rs.address, rs.port)}"
                h = checked.get((key, rs.address, rs.port))
                server: dict[str, float] = {
                    "up": 1.0 if h is None or h["up"] else 0.0,
                    "health_flips": float(h.get("flips", 0)) if h else 0.0,
                }
                if vs.proxied:
                    row = rows.get((f"be_{key}", f"rs{n + 1}"), {})
                    server |= _http(row) | {
                        "requests": _num(row, "stot"),
                        "response_ms": _num(row, "rtime"),
                    }
                else:
                    server |= l4.get(name, {})
                out[name] = server
    return out


Flow = tuple[str, str, int, str, int]  # protocol, shared address, port, server address, port


def l4_traffic(
    doc: Document,
    new_by_service: Iterable[tuple[str, int]],
    counters: dict[tuple[str, str], tuple[int, int]],
    flows: dict[Flow, int] | None,
) -> dict[str, dict[str, float]]:
    """The L4 services' and servers' readings: new connections by service from (service,
    packets) of the nat rules' counters (they see a connection's first packet only), bytes each
    way and new flows per server from the named counters ((family, name) -> (packets, bytes)),
    current flows from conntrack's table (None: not read; the gauge is left out)."""
    out: dict[str, dict[str, float]] = collections.defaultdict(dict)
    for name, packets in new_by_service:
        service = out[name]
        service["connections"] = service.get("connections", 0.0) + packets
    names = traffic_counters(doc)
    for where, (packets, nbytes) in counters.items():
        if where not in names:
            continue
        service_name, key, field = names[where]
        value = float(packets if field == "connections" else nbytes)
        out[key][field] = value
        if field != "connections":
            out[service_name][field] = out[service_name].get(field, 0.0) + value
    if flows is not None:
        for vs in doc.virtual_service:
            if vs.proxied:
                continue
            mine = {
                (a, p): n
                for (proto, vip, vport, a, p), n in flows.items()
                if (proto, vip, vport) == (vs.protocol, vs.address, vs.port)
            }
            out[vs.name]["current"] = float(sum(mine.values()))
            for rs in vs.real_server:
                key = f"{vs.name}/{hostport(rs.address, rs.port)}"
                out[key]["current"] = float(mine.get((rs.address, rs.port), 0))
    return dict(out)
