"""`carpool status` (and the WUI's and /metrics' view of the unit): one dict assembled from the
parts that own each fact, plus the warnings the findings derive from it."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from ..config.ha import Config
from . import findings
from .advert import AdvertPaths
from .control import Access
from .driver import ElectionDriver
from .holder import AddressHolder
from .paths import Paths


@dataclass
class StatusParts:
    cfg: Config
    driver: ElectionDriver
    paths: Paths
    adverts: AdvertPaths
    holder: AddressHolder
    config: Any  # node.configd.ConfigControl
    dataplanes: Any  # dataplane.dataplanes.Dataplanes
    doctor: Any  # node.doctor.DoctorAgent
    relay: Any  # node.relay.AdvertRelay
    control: Access  # who may use the control socket; the refused peers' count
    pulse: Any = None  # node.watchdog.Pulse, once running
    rides: Any = None  # node.rides.Rides, once running
    rt_priority: int = 0
    guard: Any = None  # node.guard.Guard: the partner ports' table
    carrier: Any = None  # node.links.LinkMonitor.carrier, once running
    liveness: Any = None  # node.liveness.Liveness, once running
    handover: Any = None  # node.handover.Handover


def detection(p: StatusParts, carrier: dict[str, str]) -> list[str]:
    """Which detectors can tell this standby that the partner is gone, fastest first."""
    e, out = p.driver.election, []
    lv = p.liveness
    if lv is not None and not lv.off and lv.heartbeat is not None:
        hb = lv.heartbeat.name
        out.append(
            f"carrier of {hb} ({carrier.get(hb, 'events')}), confirmed on {', '.join(lv.paths)}"
        )
        out.append(
            f"hellos on {hb} every {lv.cfg.liveness_ms} ms, {lv.cfg.liveness_multiplier} missed"
            f"{' (automatic)' if lv.automatic else ''}, confirmed on {', '.join(lv.paths)}"
        )
    out.append(f"adverts: master down after {e.params.master_down:g} s of silence")
    if lv is not None and lv.off:
        out.append(f"(fast detector off: {lv.off})")
    return out


def unit_status(p: StatusParts) -> dict:
    cfg, e, now = p.cfg, p.driver.election, p.driver.now()
    partner = {}
    carrier = p.carrier() if p.carrier is not None else {}
    for name, st in p.paths.items():
        iface = p.adverts.ifaces[name]
        ago = None if st.last_advert is None else round(now - st.last_advert, 3)
        partner[name] = {
            "address": str(iface.partner(cfg.role)),
            "advert_seen_ago": ago,
            "advert_alive": ago is not None and ago <= e.params.master_down,
            "adverts_heard": st.adverts_heard,
            "ping_ok": st.ping_ok,
            "ping_rtt_ms": None if st.ping_rtt is None else round(st.ping_rtt * 1000, 3),
            "link_up": st.link_up,
            # how its carrier is followed: netlink events, or polled (a driver's may be late)
            "carrier": carrier.get(name, "events"),
            "check": iface.check,
            "heartbeat": iface.heartbeat,
            "ping_target": str(iface.ping_target) if iface.ping_target else None,
            "ping_target_ok": st.target_ok,
        }
    ac, dc = p.adverts.counters, p.driver.counters
    status = {
        "role": cfg.role,
        "name": cfg.unit_name,
        "partner_name": cfg.partner_name,
        "state": e.state.value,
        "since": None if e.since is None else time.time() - (now - e.since),
        "since_ago": None if e.since is None else round(now - e.since, 3),
        "reason": e.reason,
        "protocol": cfg.protocol,
        "auth": p.adverts.auth_status(),
        "vhid": cfg.vhid,
        "advbase": cfg.advbase,
        "advskew": cfg.advskew,
        "priority": cfg.priority,
        "preempt": cfg.preempt,
        "transport": cfg.transport,
        "vmac": p.holder.vmac,
        "demote": len(e.demote_reasons),
        "demote_reasons": list(e.demote_reasons),
        "pacified": e.pacified,
        "partner": partner,
        "shared_held": list(p.holder.held),
        "drops": {reason.value: n for reason, n in ac.drops.items()},
        "counters": {
            "adverts_sent": ac.sent,
            "adverts_received": ac.received,
            "adverts_stale": ac.stale,  # an older round read late on another path
            "adverts_again": ac.again,  # a round already heard on another path
            "send_errors": ac.send_errors,
            "effect_errors": dc.effect_errors,
            "transitions": dc.transitions,
            "timer_late_max_ms": round(dc.timer_late_max * 1000, 1),
            "timer_late_over_interval": dc.timer_late_over_interval,
        },
        "loop": {
            **(p.pulse.status() if p.pulse else {}),
            "rt_priority": p.rt_priority,
            "rides": p.rides.status() if p.rides else None,
        },
        "timers": {
            "advert_interval": e.params.advert_interval,
            "master_down": e.params.master_down,
            "stall_limit": round(e.stall_limit(), 3),
            "next_timer_in": None if e.deadline is None else round(e.deadline - now, 3),
        },
        "events": list(p.driver.events),
        "pid": os.getpid(),
        "config": {
            "version": p.config.store.current.record.version,
            "hash": p.config.store.current.record.hash,
        },
        "sync": p.config.sync.status(),
        "certificates": certificate_dates(p.config.store.current),
        "dataplane": p.dataplanes.status(),
        "doctor": dict(p.doctor.counters),
        **p.holder.status(),
        "relay": p.relay.status(now),
        "liveness": p.liveness.status(now) if p.liveness is not None else None,
        "detection": detection(p, carrier),
        "handover": p.handover.status() if p.handover is not None else None,
        "control": {"refused": p.control.refused},
        "guard": p.guard.status() if p.guard is not None else None,
    }
    warnings = findings.warnings(
        status, p.config.sync.partner_ha, p.doctor.recent_foreign(), time.time()
    )
    status["warnings"] = [str(w) for w in warnings]
    status["warning_kinds"] = [w.kind.value for w in warnings]  # the kind of each, in order
    return status


_dates: dict[str, list[dict]] = {}  # version hash -> its certificates' dates (parsed once)


def certificate_dates(version: Any) -> list[dict]:
    """Each certificate's name, end and users, read once per configuration version (status
    is asked several times a second; days left are the reader's, from not_after)."""
    found = _dates.get(version.record.hash)
    if found is None:
        doc = version.document
        used = doc.certificates_used()
        found = [
            {"name": c.name, "not_after": c.info().not_after, "used_by": used.get(c.name, [])}
            for c in doc.certificate
        ]
        _dates.clear()  # only the current version's
        _dates[version.record.hash] = found
    return found
