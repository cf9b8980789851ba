"""The doctor's agent in the daemon: probes over the advert paths, and what it observes.

Both units run it. `run()` (the `doctor` control command) sends probes (carpool.ha.probe) on
every advert interface, exactly where adverts go; the partner counts them per interface and
answers with a report on every interface, so one exchange shows both directions of each path:
what the partner heard of ours (in the report) and where its report reached us. The partner's
report also comes over the sync channel (node/relay.py) when that is up, so a direction that
drops on every path is still named, not just "no report". With virtual
MACs the unit holding the addresses also sends unicast frames from the virtual MAC to the
partner. Pings, the sync port and the foreign speakers the daemon noted complete the picture,
which carpool.node.findings turns into findings. Nothing here feeds the election or touches
the data plane.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import secrets
import time
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address

from .. import __version__, events
from ..ha import probe
from ..ha.ipv4 import PROTO_CARP, TTL, Ipv4Packet
from . import addresses
from .advert import path6
from .view import UnitView

log = events.logger("carpool.doctor", events.Kind.DOCTOR)
PROBES_PER_PATH = 3
PROBE_GAP = 0.03
REPORT_DELAY = 0.15  # gather the partner's probes on every path before answering once
REPORT_WAIT = 1.5  # how long the initiator waits for reports
MAX_REPORTS_PER_ID = 4
MAX_REPORTS_PER_S = 20  # unauthenticated probes may trigger reports: bounded
FOREIGN_WINDOW = 10.0  # s a silent foreign speaker stays in the findings (at least)
KINDS = ("probe", "vmac", "report")  # a probe's "k"
MAX_FOREIGN = 64  # speakers remembered (sources are easy to forge): the stalest is forgotten


@dataclass
class Heard:
    """Probes of one id heard from the partner."""

    probes: collections.Counter = field(default_factory=collections.Counter)
    vmac: collections.Counter = field(default_factory=collections.Counter)
    authentic: bool = True
    want_vmac: bool = False
    reports_sent: int = 0
    report_due: bool = False
    vmac_sent: bool = False


@dataclass
class Session:
    """One run of ours: the partner's reports by the interface they arrived on."""

    id: str
    reports: dict = field(default_factory=dict)
    report_authentic: bool | None = None
    vmac_heard: collections.Counter = field(default_factory=collections.Counter)
    first_report_at: float | None = None  # wall time (the partner stamps its reports)
    relayed: dict | None = None  # the partner's report over 6973
    arrived: asyncio.Event = field(default_factory=asyncio.Event)


class DoctorAgent:
    def __init__(self, unit: UnitView):
        self.unit = unit
        self.heard: collections.OrderedDict[str, Heard] = collections.OrderedDict()
        self.sessions: dict[str, Session] = {}
        # (iface, source) -> sighting, the least recently heard first
        self.foreign: collections.OrderedDict[tuple[str, str], dict] = collections.OrderedDict()
        self.counters: collections.Counter = collections.Counter()
        self._report_times: collections.deque = collections.deque(maxlen=MAX_REPORTS_PER_S)

    @property
    def key(self) -> bytes:
        return probe.probe_key(self.unit.cfg.secret)

    # -- receive side (called from the daemon's socket reader) ------------------------------
    def note_foreign(self, iface: str, source: IPv4Address | IPv6Address, payload: bytes) -> None:
        """An advert for our VHID from an address that is neither ours nor the partner's."""
        kind = (
            {2: "CARP", 3: "VRRPv3", 12: "carpool"}.get(
                payload[0] >> 4, f"version {payload[0] >> 4}"
            )
            if payload
            else "?"
        )
        now, key = time.time(), (iface, str(source))
        seen = self.foreign.get(key)
        if seen is None:
            seen = self.foreign[key] = {"count": 0, "last": now, "gap": 0}
            while len(self.foreign) > MAX_FOREIGN:
                self.foreign.popitem(last=False)
                self.counters["foreign_evicted"] += 1
        else:
            self.foreign.move_to_end(key)
        seen.update(
            count=seen["count"] + 1, gap=max(seen["gap"], now - seen["last"]), last=now, kind=kind
        )

    def recent_foreign(self) -> list[dict]:
        """Speakers heard within 3 of their own advert intervals (at least FOREIGN_WINDOW s):
        one that stopped drops out of the findings and warnings soon after."""
        now = time.time()
        for key in [
            k
            for k, v in self.foreign.items()
            if now - v["last"] > max(FOREIGN_WINDOW, 3 * v["gap"])
        ]:
            del self.foreign[key]
        return [
            {
                "interface": i,
                "source": s,
                "kind": v["kind"],
                "count": v["count"],
                "last_ago": round(now - v["last"], 1),
            }
            for (i, s), v in sorted(self.foreign.items())
        ]

    def on_probe(self, iface: str, source: IPv4Address | IPv6Address, payload: bytes) -> None:
        if not self.unit.is_partner(source):  # only the partner gets answers: not even decoded
            self.counters["probe_from_stranger"] += 1
            return
        try:
            p = probe.decode(self.key, payload)
        except probe.ProbeError as e:
            self.counters["bad_probe"] += 1
            log.debug("bad doctor probe on %s from %s: %s", iface, source, e)
            return
        body, kind, pid = p.body, p.body.get("k"), str(p.body.get("id", ""))[:32]
        # only known kinds are counted: a forged probe must not add counters (nor metrics)
        if not pid or kind not in KINDS or (kind == "report" and not _report_shape(body)):
            self.counters["bad_probe"] += 1
            return
        self.counters[f"{kind}_received"] += 1
        if kind == "report" and pid in self.sessions:
            s = self.sessions[pid]
            s.reports[iface] = body
            s.report_authentic = p.authentic and s.report_authentic is not False
            s.first_report_at = s.first_report_at or time.time()
            s.arrived.set()
        elif kind == "vmac" and pid in self.sessions:
            self.sessions[pid].vmac_heard[iface] += 1
        elif kind in ("probe", "vmac") and pid not in self.sessions:
            heard = self._heard(pid)
            (heard.probes if kind == "probe" else heard.vmac)[iface] += 1
            heard.authentic = heard.authentic and p.authentic
            heard.want_vmac = heard.want_vmac or bool(body.get("want_vmac"))
            if kind == "probe" and not heard.report_due and heard.reports_sent < MAX_REPORTS_PER_ID:
                heard.report_due = True
                asyncio.get_running_loop().call_later(REPORT_DELAY, self._report, pid)

    def _heard(self, pid: str) -> Heard:
        heard = self.heard.get(pid)
        if heard is None:
            heard = self.heard[pid] = Heard()
            while len(self.heard) > 16:
                self.heard.popitem(last=False)
        return heard

    def _limited(self) -> bool:
        now = time.monotonic()
        if len(self._report_times) == MAX_REPORTS_PER_S and now - self._report_times[0] < 1:
            self.counters["reports_limited"] += 1
            return True
        self._report_times.append(now)
        return False

    def _report(self, pid: str) -> None:
        heard = self.heard.get(pid)
        if heard is None:
            return
        heard.report_due = False
        if self._limited():
            return
        if heard.want_vmac and not heard.vmac_sent and self.holds_vmac():
            heard.vmac_sent = True
            self.send_vmac_frames(pid)
        heard.reports_sent += 1
        self.send_everywhere(self.report_body(pid))

    def report_body(self, pid: str) -> dict:
        unit, heard = self.unit, self.heard.get(pid) or Heard()
        return {
            "k": "report",
            "id": pid,
            "from": unit.cfg.role,
            "heard": dict(heard.probes),
            "vmac_heard": dict(heard.vmac),
            "authentic": heard.authentic,
            "ping": {n: st.ping_ok for n, st in unit.paths().items()},
            "state": unit.ha_state(),
            "version": __version__,
            "config": list(unit.version()),
            "time": time.time(),
        }

    def report_over_relay(self, pid: str, send) -> None:
        """The partner asked over 6973: our report once its probes are in (or are not). Sent
        on the advert paths too if no probe made us send it there, so the partner -> us
        direction of each path is tested even when none of its probes reached us."""

        def answer() -> None:
            if self._limited():
                return
            body = self.report_body(pid)
            send(body)
            heard = self.heard.get(pid)
            if heard is None or (heard.reports_sent == 0 and not heard.report_due):
                self._heard(pid).reports_sent += 1
                self.send_everywhere(body)

        asyncio.get_running_loop().call_later(REPORT_DELAY, answer)

    def on_relayed_report(self, body: dict) -> None:
        pid = str(body.get("id", ""))
        if body.get("k") != "report" or not _report_shape(body) or pid not in self.sessions:
            self.counters["bad_relayed_report"] += 1
            return
        self.counters["relayed_report_received"] += 1
        s = self.sessions[pid]
        s.relayed = body
        s.first_report_at = s.first_report_at or time.time()
        s.arrived.set()

    # -- send side --------------------------------------------------------------------------
    def send_everywhere(self, body: dict) -> dict[str, int]:
        """One probe on every advert socket to every advert destination; sent per interface."""
        return self.unit.send_probe(probe.encode(self.key, body))

    def holds_vmac(self) -> bool:
        return bool(self.unit.cfg.vmac and self.unit.held())

    def send_vmac_frames(self, pid: str) -> dict[str, int]:
        """Unicast IPv4 frames from the virtual MAC to the partner on each shared interface
        (only the unit that holds the MAC sends: a frame from the standby would teach the
        switch the wrong port)."""
        cfg, sent, paths = self.unit.cfg, {}, self.unit.advert_paths()
        payload = probe.encode(self.key, {"k": "vmac", "id": pid, "from": cfg.role})
        for iface in cfg.interfaces:
            if not iface.shared or iface.name not in paths:
                continue
            own, partner = iface.own4(cfg.role), iface.partner4(cfg.role)
            if own is None or partner is None:  # the probe is an IPv4 frame
                continue
            mac = neighbour_mac(str(partner), iface.name)
            if mac is None:
                sent[iface.name] = 0
                continue
            packet = Ipv4Packet(own, partner, TTL, PROTO_CARP, payload).pack()
            try:
                for _ in range(PROBES_PER_PATH):
                    addresses.send_frame(iface.name, mac, cfg.vmac_address, 0x0800, packet)
                sent[iface.name] = PROBES_PER_PATH
            except OSError as e:
                log.warning("doctor: frame from the virtual MAC on %s failed: %s", iface.name, e)
                sent[iface.name] = 0
        return sent

    # -- a doctor run -----------------------------------------------------------------------
    async def run(self, pinger) -> dict:
        """Probe every path, ping the partner, try the sync port; the raw observations."""
        unit, cfg = self.unit, self.unit.cfg
        paths = unit.advert_paths()
        pid = secrets.token_hex(8)
        session = self.sessions[pid] = Session(pid)
        names = [p for p in self._path_targets() if p in paths]
        try:
            # ICMP on each interface, ICMPv6 on each IPv6 path: a filter may drop one of them
            targets = self._path_targets()
            pings = asyncio.gather(*[pinger.ping(targets[n], 1.0) for n in names])
            sync = asyncio.ensure_future(unit.probe_sync())
            await pings  # first: the partner's MAC is then in the neighbour table
            # the standby resolves the shared addresses as a client on the link would
            resolved = asyncio.ensure_future(
                shared_neighbours(cfg, pinger)
                if unit.ha_state() == "backup"
                else asyncio.sleep(0, {})
            )
            want_vmac = bool(cfg.vmac) and not self.holds_vmac()
            sent: collections.Counter = collections.Counter()
            started = time.monotonic()
            if self.holds_vmac():
                vmac_sent = self.send_vmac_frames(pid)
            else:
                vmac_sent = {}
            for n in range(PROBES_PER_PATH):
                sent.update(
                    self.send_everywhere(
                        {"k": "probe", "id": pid, "n": n, "from": cfg.role, "want_vmac": want_vmac}
                    )
                )
                await asyncio.sleep(PROBE_GAP)
            relayed = unit.ask_doctor(pid)
            deadline = started + REPORT_WAIT
            while time.monotonic() < deadline and (
                len(session.reports) < len(paths) or (relayed and session.relayed is None)
            ):
                session.arrived.clear()
                try:
                    await asyncio.wait_for(session.arrived.wait(), deadline - time.monotonic())
                except TimeoutError:
                    break
            rtts = pings.result()
            status = unit.status()
            return {
                "role": cfg.role,
                "state": unit.ha_state(),
                "version": __version__,
                "config": list(unit.version()),
                "time": time.time(),
                "transport": cfg.transport,
                "vmac": bool(cfg.vmac),
                "vhid": cfg.vhid,
                "auth": status.get("auth"),
                "certificates": status.get("certificates", []),
                "liveness": status.get("liveness"),
                "detection": status.get("detection", []),
                "vmac_address": cfg.vmac_address if cfg.vmac else None,
                "sync_port": unit.sync_port(),
                "report_received": session.first_report_at,
                "vmac_sender": "us" if self.holds_vmac() else ("partner" if want_vmac else None),
                "vmac_sent": vmac_sent,
                "vmac_heard": dict(session.vmac_heard),
                "sent": dict(sent),
                "reports": session.reports,
                "relayed_report": session.relayed,
                "report_authentic": session.report_authentic,
                "pings": {
                    n: None if r is None else round(r * 1000, 3)
                    for n, r in zip(names, rtts, strict=False)
                },
                "interfaces": self._interfaces(),
                "shared6": shared6_state(cfg) if unit.ha_state() == "master" else {},
                "neighbours": await resolved,
                "partner_state": unit.partner_ha(),
                "sync": await sync,
                "foreign": self.recent_foreign(),
            }
        finally:
            self.sessions.pop(pid, None)

    def _path_targets(self) -> dict[str, str]:
        """Each path's partner address: the interface's, and its IPv6 one on `<name>/ipv6`."""
        cfg, out = self.unit.cfg, {}
        for iface in cfg.interfaces:
            partner4 = iface.partner4(cfg.role)
            if partner4 is not None:
                out[iface.name] = str(partner4)
            partner6 = iface.partner6(cfg.role)
            if partner6 is not None:
                out[path6(iface.name)] = str(partner6)
        return out

    def _interfaces(self) -> dict:
        """Per path (an interface, and its IPv6 twin `<name>/ipv6`): what the findings read."""
        unit, now = self.unit, self.unit.now()
        states, paths, out = unit.paths(), unit.advert_paths(), {}
        for iface in unit.cfg.interfaces:
            st = states[iface.name]
            out[iface.name] = {
                "check": iface.check,
                "heartbeat": iface.heartbeat,
                "shared": [str(c) for c in iface.shared],
                "link_up": st.link_up,
                "socket": iface.name in paths,
                "advert_seen_ago": None
                if st.last_advert is None
                else round(now - st.last_advert, 3),
            }
            if path6(iface.name) in paths:
                out[path6(iface.name)] = {**out[iface.name], "socket": True, "family": 6}
        return out


def _report_shape(body: dict) -> bool:
    """A report's fields have the types the findings read (a partner's bug is not our crash)."""

    def counts(value) -> bool:
        return isinstance(value, dict) and all(
            isinstance(k, str) and isinstance(v, int) for k, v in value.items()
        )

    config = body.get("config")
    return (
        counts(body.get("heard"))
        and counts(body.get("vmac_heard"))
        and isinstance(body.get("ping"), dict)
        and isinstance(body.get("time"), (int, float))
        and isinstance(body.get("version"), str)
        and isinstance(config, list)
        and len(config) == 2
        and isinstance(config[0], int)
        and isinstance(config[1], str)
    )


# /proc/net/if_inet6 flags (IFA_F_*): an address still in (or failed) duplicate detection
_TENTATIVE, _DADFAILED = 0x40, 0x08


def shared6_state(cfg) -> dict[str, str]:
    """Each IPv6 shared address as the kernel holds it here: ok, tentative, dadfailed or
    absent (on the active unit; added nodad, so anything but ok is news)."""
    held: dict[tuple[str, str], int] = {}
    try:
        with open("/proc/net/if_inet6") as f:
            for line in f.read().splitlines():
                fields = line.split()
                if len(fields) == 6:
                    address = str(ipaddress.IPv6Address(int(fields[0], 16)))
                    held[(address, fields[5])] = int(fields[4], 16)
    except OSError:
        pass
    vmac = addresses.vmac_ifname if cfg.vmac else None
    out = {}
    for iface in cfg.interfaces:
        names = {iface.name} | ({vmac(iface.name, cfg.vmac_address)} if vmac else set())
        for cidr in iface.shared6:
            flags = [held[k] for k in ((str(cidr.ip), n) for n in names) if k in held]
            if not flags:
                out[str(cidr)] = "absent"
            elif flags[0] & _DADFAILED:
                out[str(cidr)] = "dadfailed"
            elif flags[0] & _TENTATIVE:
                out[str(cidr)] = "tentative"
            else:
                out[str(cidr)] = "ok"
    return out


async def shared_neighbours(cfg, pinger) -> dict[str, dict]:
    """On the standby, a node on the clients' links: the MAC each shared address resolves to
    (ARP / neighbour discovery, set off by a ping) and the active unit's MACs it should be
    (the virtual MAC, or the partner's interface MAC the doctor's pings just resolved).
    Solicited only: whether a client took an unsolicited NA cannot be seen from here, but a
    client whose entry stayed wrong sends to the MAC this shows."""
    shared = [(iface, cidr) for iface in cfg.interfaces for cidr in iface.shared]
    if not shared:
        return {}
    await asyncio.gather(*[pinger.ping(str(cidr.ip), 1.0) for _, cidr in shared])
    out: dict[str, dict] = {}
    for iface in {i.name: i for i, _ in shared}.values():
        try:
            table = await asyncio.to_thread(addresses.neighbours, iface.name)
        except OSError as e:
            log.warning("doctor: cannot read the neighbour table of %s: %s", iface.name, e)
            table = {}
        if cfg.vmac:
            expected = {cfg.vmac_address.lower()}
        else:
            own = (iface.partner4(cfg.role), iface.partner6(cfg.role))
            expected = {table[str(a)] for a in own if a is not None and str(a) in table}
        for cidr in iface.shared:
            out[str(cidr)] = {"mac": table.get(str(cidr.ip)), "expected": sorted(expected)}
    return out


def neighbour_mac(address: str, ifname: str) -> str | None:
    """The MAC of `address` on `ifname` from the kernel's ARP table, or None."""
    try:
        with open("/proc/net/arp") as f:
            lines = f.read().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if (
            len(fields) >= 6
            and fields[0] == address
            and fields[5] == ifname
            and fields[3] != "00:00:00:00:00:00"
        ):
            return fields[3]
    return None
