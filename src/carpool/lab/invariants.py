"""The chaos campaign's invariants (DESIGN §10, issue 11), checked on what was seen from outside
the daemons. Pure: timelines and the fault log in, violations out; every time is passed in
(CLOCK_MONOTONIC seconds), nothing here reads a clock or the system.

Inputs
    held      {(unit, address): [(start, end), ...]}   when the unit held the shared address
              (sampler.held_intervals builds it from the sampler's change lines)
    faults    the campaign's fault log: dicts with at least "id", "kind", "inject", "heal" and
              "effect" {"dead": [units], "cut": [channels], "client_down": [units]} (the
              effect of carpool.lab.faults.FAULTS), optionally "dead_windows"
              {unit: [[start, end], ...]} (reboot: only while restarting) and "live_again"
              {unit: t} (a restarted daemon answered: it is live again from then, not from the
              heal)
    channels  the channels that join the units: advert paths per direction ("eth0:a>b", ...)
              and "sync" (TCP 6973)
    bounds    Bounds (from the profile's advert interval and master-down time)

Invariants
    I1 never two holders longer than bounds.overlap while both daemons are live and any channel
       joins them (the clock starts when all three hold, e.g. at the heal of a partition);
    I2 a holder within bounds.takeover of any moment from which a live unit has its client link;
    I3 no address a unit held when its daemon stopped being live still held beyond
       bounds.stale after that;
    I4 after a heal: one holder, the same version and hash on both units, every version created
       so far in a unit's history (a conflict counts: the pair keeps a split-brain loser on the
       unit that made it; versions older than the kept window cannot be checked).
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field

Interval = tuple[float, float]


# -- intervals (sorted, disjoint lists of (start, end)) ---------------------------------------
def union(*lists: list[Interval]) -> list[Interval]:
    spans = sorted((s, e) for lst in lists for s, e in lst if e > s)
    out: list[list[float]] = []
    for s, e in spans:
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(s, e) for s, e in out]


def intersect(a: list[Interval], b: list[Interval]) -> list[Interval]:
    a, b = union(a), union(b)
    out, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        s, e = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if e > s:
            out.append((s, e))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def complement(a: list[Interval], start: float, end: float) -> list[Interval]:
    out, t = [], start
    for s, e in union(a):
        if s > t:
            out.append((t, min(s, end)))
        t = max(t, e)
    if t < end:
        out.append((t, end))
    return [(s, e) for s, e in out if e > s]


def intersect_all(lists: list[list[Interval]]) -> list[Interval]:
    if not lists:
        return []
    out = union(lists[0])
    for lst in lists[1:]:
        out = intersect(out, lst)
    return out


# -- bounds and results -----------------------------------------------------------------------
@dataclass(frozen=True)
class Bounds:
    advert: float  # advert interval (s)
    master_down: float  # a backup's master-down time (s)
    sample: float = 0.02  # the sampler's resolution: one period plus its jitter
    takeover_margin: float = 1.0  # detection, first election after a restart, a loaded host
    floor: float = 0.0  # the fast profile's target is 100 ms, not 2 x 20 ms

    @property
    def overlap(self) -> float:  # I1: a handover's overlap
        return max(2 * self.advert, self.floor) + self.sample

    @property
    def stale(self) -> float:  # I3: a dead unit's addresses gone
        return max(2 * self.advert, self.floor) + self.sample

    @property
    def takeover(self) -> float:  # I2
        return self.master_down + self.takeover_margin


@dataclass
class Violation:
    invariant: str  # I1 .. I4
    address: str | None
    unit: str | None
    start: float
    end: float
    detail: str
    faults: list[int] = field(default_factory=list)  # ids of the faults it falls in
    canary: bool = False  # deliberately made by the campaign's canary

    @property
    def duration(self) -> float:
        return self.end - self.start

    def to_json(self) -> dict:
        return asdict(self) | {"duration": round(self.duration, 4)}


# -- what the fault log says about the pair ---------------------------------------------------
@dataclass
class Facts:
    dead: dict[str, list[Interval]]  # unit -> no live, responsive daemon
    cut: dict[str, list[Interval]]  # channel -> carries nothing
    client_down: dict[str, list[Interval]]  # unit -> its eth0 down
    links_down: dict[tuple[str, str], list[Interval]] = field(default_factory=dict)
    # (unit, iface) -> that link down


def facts(
    faults: list[dict], units: tuple[str, ...], channels: tuple[str, ...], end: float
) -> Facts:
    """The intervals of each effect. A fault not healed yet lasts until `end`."""
    dead: dict[str, list] = {u: [] for u in units}
    cut: dict[str, list] = {c: [] for c in channels}
    down: dict[str, list] = {u: [] for u in units}
    links: dict[tuple[str, str], list] = {}
    for f in faults:
        if f.get("skipped"):
            continue
        t0, t1 = f["inject"], f.get("heal") or end
        effect = f.get("effect", {})
        explicit = f.get("dead_windows") or {}
        for unit in effect.get("dead", []):
            if unit in explicit:
                dead[unit] += [tuple(w) for w in explicit[unit]]
            else:
                dead[unit].append((t0, (f.get("live_again") or {}).get(unit, t1)))
        for ch in effect.get("cut", []):
            cut.setdefault(ch, []).append((t0, t1))
        for unit in effect.get("client_down", []):
            down[unit].append((t0, t1))
        for unit, iface in effect.get("links_down", []):
            links.setdefault((unit, iface), []).append((t0, t1))
    return Facts(
        {u: union(v) for u, v in dead.items()},
        {c: union(v) for c, v in cut.items()},
        {u: union(v) for u, v in down.items()},
        {k: union(v) for k, v in links.items()},
    )


def _fault_ids(faults: list[dict], t: float, settle: float) -> list[int]:
    """The faults in force at t (from injection to heal + settle)."""
    return [
        f["id"]
        for f in faults
        if not f.get("skipped") and f["inject"] <= t <= (f.get("heal") or float("inf")) + settle
    ]


# -- I1 .. I3 ---------------------------------------------------------------------------------
def check_timeline(
    held: dict[tuple[str, str], list[Interval]],
    faults: list[dict],
    units: tuple[str, str],
    addresses: list[str],
    channels: tuple[str, ...],
    bounds: Bounds,
    start: float,
    end: float,
    canaries: list[dict] | None = None,
    links: dict[str, str] | None = None,
    held_surely: dict[tuple[str, str], list[Interval]] | None = None,
) -> list[Violation]:
    """I1, I2 and I3 over [start, end]. held: when each unit may have held each address,
    held_surely (default: held) when it surely did (sampler.held_intervals): I1 and I3 judge
    what surely was, I2 what may have been, so a starved sampler is never blamed on the pair.
    canaries: [{"unit", "address", "start", "end"}] windows
    in which the campaign made a double holder itself; violations in them are marked canary
    (I1) or ignored (I2/I3 cannot be blamed on the pair there). links: the interface each
    address lives on (default eth0): a unit with that link down cannot hold it (I2)."""
    fx = facts(faults, units, channels, end)
    surely = held if held_surely is None else held_surely
    canary_spans = union([(c["start"], c["end"] + bounds.overlap) for c in canaries or []])
    a, b = units
    out: list[Violation] = []
    settle = bounds.takeover
    # I1: both live and joined
    all_cut = intersect_all([fx.cut.get(c, []) for c in channels])
    apart = union(fx.dead[a], fx.dead[b], all_cut)
    joined = complement(apart, start, end)
    for addr in addresses:
        both = intersect(surely.get((a, addr), []), surely.get((b, addr), []))
        for s, e in intersect(both, joined):
            if e - s > bounds.overlap:
                v = Violation(
                    "I1",
                    addr,
                    None,
                    s,
                    e,
                    f"both units held {addr} for {e - s:.3f}s while both were live "
                    f"and joined (bound {bounds.overlap:.3f}s)",
                    _fault_ids(faults, s, settle),
                )
                v.canary = bool(intersect([(s, e)], canary_spans))
                out.append(v)
    # I2: a live unit with its client link (and the address's own link), and nobody holds
    for addr in addresses:
        iface = (links or {}).get(addr, "eth0")
        serving = union(
            *[
                complement(
                    union(fx.dead[u], fx.client_down[u], fx.links_down.get((u, iface), [])),
                    start,
                    end,
                )
                for u in units
            ]
        )
        nobody = complement(union(*[held.get((u, addr), []) for u in units]), start, end)
        for s, e in intersect(nobody, serving):
            if e - s > bounds.takeover and not intersect([(s, e)], canary_spans):
                until = " (until the end of the run)" if e >= end else ""
                out.append(
                    Violation(
                        "I2",
                        addr,
                        None,
                        s,
                        e,
                        f"no unit held {addr} for {e - s:.3f}s{until} while a "
                        f"live unit had its client link (bound "
                        f"{bounds.takeover:.3f}s)",
                        _fault_ids(faults, s, settle),
                    )
                )
    # I3: still held, beyond the bound, what a unit held when its daemon stopped being live.
    # (Holding that starts while the log says "dead" is a restarted daemon seen live a few ms
    # before the campaign noticed: nothing was left behind.)
    for unit in units:
        for d0, d1 in fx.dead[unit]:
            for addr in addresses:
                for h0, h1 in surely.get((unit, addr), []):
                    if h0 <= d0 < h1 and min(h1, d1) > d0 + bounds.stale:
                        e = min(h1, d1)
                        out.append(
                            Violation(
                                "I3",
                                addr,
                                unit,
                                d0,
                                e,
                                f"unit {unit} held {addr} until {e - d0:.3f}s "
                                f"after its daemon stopped being live (bound "
                                f"{bounds.stale:.3f}s)",
                                _fault_ids(faults, d0, settle),
                            )
                        )
    return sorted(out, key=lambda v: (v.start, v.invariant))


# -- I4 ---------------------------------------------------------------------------------------
def check_heal(snapshot: dict, created: list[dict]) -> list[Violation]:
    """I4 on a snapshot taken after a heal (once the pair settled or its deadline passed):
        {"t", "fault": id, "holders": {address: [units]},
         "config": {unit: {"version", "hash"} or None},
         "history": {unit: [{"version", "hash", "conflict"}, ...]}}
    created: every version made during the run so far, {"version", "hash" (or a prefix),
    "unit", "t"}."""
    t, fid = snapshot["t"], snapshot.get("fault")
    ids = [fid] if fid is not None else []
    out = []
    for addr, holders in sorted(snapshot.get("holders", {}).items()):
        if len(holders) != 1:
            out.append(
                Violation(
                    "I4",
                    addr,
                    None,
                    t,
                    t,
                    f"after the heal {addr} is held by "
                    f"{', '.join(holders) or 'nobody'} (one unit expected)",
                    ids,
                )
            )
    config = snapshot.get("config", {})
    seen = {u: (c["version"], c["hash"]) if c else None for u, c in config.items()}
    if None in seen.values() or len(set(seen.values())) != 1:
        out.append(
            Violation(
                "I4",
                None,
                None,
                t,
                t,
                "after the heal the units differ: "
                + ", ".join(
                    f"{u} {v[0]}:{v[1][:12]}" if v else f"{u} no answer"
                    for u, v in sorted(seen.items())
                ),
                ids,
            )
        )
    # The pair keeps a split-brain loser as a CONFLICT on the unit that made it (config.store),
    # so a version is lost when neither unit's history has it.
    history = [r for rs in snapshot.get("history", {}).values() for r in rs]
    kept = [r["version"] for r in history if not r.get("conflict")]
    oldest = min(kept) if kept else 0
    for c in created:
        if c["version"] < oldest:
            continue  # pruned from the kept window: nothing left to compare with
        if not any(
            r["version"] == c["version"] and r["hash"].startswith(c["hash"]) for r in history
        ):
            out.append(
                Violation(
                    "I4",
                    None,
                    c["unit"],
                    t,
                    t,
                    f"version {c['version']} ({c['hash'][:12]}, made on unit "
                    f"{c['unit']}) is in neither unit's history",
                    ids,
                )
            )
    return out


# -- outages, canary, summary -----------------------------------------------------------------
def outages(faults: list[dict], gaps: list[Interval], end: float) -> dict[int, float]:
    """Client-visible outage per fault: the probe's reply gaps inside the fault's window (from
    its injection to the next fault's, or the end)."""
    real = sorted((f for f in faults if not f.get("skipped")), key=lambda f: f["inject"])
    out = {}
    for i, f in enumerate(real):
        stop = real[i + 1]["inject"] if i + 1 < len(real) else end
        out[f["id"]] = round(
            sum(e - s for s, e in intersect(union(gaps), [(f["inject"], stop)])), 4
        )
    return out


def canary_verdict(violations: list[Violation], canary: dict, bounds: Bounds) -> tuple[bool, str]:
    """Did the checker flag the canary's window, and only it? canary: {"address", "start",
    "end"} (the campaign held the address on the standby from start to end)."""
    lo, hi = canary["start"] - bounds.sample, canary["end"] + bounds.overlap + bounds.sample
    flagged = [
        v
        for v in violations
        if v.invariant == "I1" and v.address == canary["address"] and v.end > lo and v.start < hi
    ]
    if not flagged:
        return False, (
            f"the canary held {canary['address']} on both units for "
            f"{canary['end'] - canary['start']:.3f}s and I1 did not fire"
        )
    outside = [v for v in flagged if v.start < lo or v.end > hi]
    if outside:
        return False, f"I1 fired outside the canary window: {[v.to_json() for v in outside]}"
    covered = sum(v.duration for v in flagged)
    wanted = canary["end"] - canary["start"] - 2 * bounds.overlap
    if covered < wanted:
        return False, f"I1 flagged {covered:.3f}s of a {wanted:.3f}s canary double holder"
    return True, f"I1 flagged the canary: {covered:.3f}s in {len(flagged)} window(s)"


def summary(
    faults: list[dict], violations: list[Violation], outage: dict[int, float]
) -> dict[str, dict]:
    """Per fault kind: count, how many failed to inject (they stay in force: see the
    campaign), client outage median and max (s), violations (canary excluded)."""

    def row(kind):
        return table.setdefault(kind, {"count": 0, "failed": 0, "outages": [], "violations": 0})

    table: dict[str, dict] = {}
    for f in faults:
        if f.get("skipped"):
            continue
        r = row(f["kind"])
        r["count"] += 1
        r["failed"] += 1 if f.get("error") else 0
        r["outages"].append(outage.get(f["id"], 0.0))
    by_id = {f["id"]: f["kind"] for f in faults}
    for v in violations:
        if v.canary:
            continue
        for kind in {by_id[i] for i in v.faults if i in by_id} or {"(none)"}:
            row(kind)["violations"] += 1
    for r in table.values():
        o = r.pop("outages")
        r["outage_median"] = round(statistics.median(o), 3) if o else None
        r["outage_max"] = round(max(o), 3) if o else None
    return dict(sorted(table.items()))
