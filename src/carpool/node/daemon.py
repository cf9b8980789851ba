"""The unit daemon: wires the pure election to sockets, netlink, ICMP and the control socket.

Everything here is I/O glue; decisions are made in carpool.ha.election. One event loop; the
election is fed events and the effects it returns are carried out in order.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import json
import logging
import os
import secrets
import signal
import time
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address
from pathlib import Path

from ..config.ha import Config, with_document
from ..config.store import Store, Version
from ..ha import election as el
from ..ha import probe
from ..ha.drops import DropError
from ..ha.ipv4 import parse_ipv4
from ..ha.profile import PROTO_CARP, CarpProfile, VrrpProfile
from ..dataplane.conntrack import ConntrackSync
from ..dataplane.haproxy import HaproxyDataplane
from ..dataplane.health import HealthChecker
from ..dataplane.l4 import L4Dataplane
from ..web.unit import WebUnit
from . import addresses, control
from . import findings
from .configd import ConfigControl
from .doctor import DoctorAgent
from .fence import Fence, fence_timeout
from .watchdog import Pulse, watchdog_timeout
from .pacify import StartRecord
from .icmp import Pinger
from .links import LinkMonitor
from .notify import run_notify
from .rawsock import AdvertSocket
from .relay import AdvertRelay, wants_relay
from .sched import realtime
from .shared import SharedAddresses

log = logging.getLogger("carpool.daemon")
MULTICAST = IPv4Address("224.0.0.18")
PING_MISSES = 3  # consecutive misses before a ping check fails: one lost echo is no outage
# Kernel lifetime of a held shared address, renewed every LIFETIME_RENEW s while active: the
# backstop that removes a dead unit's addresses (the fence darkens them long before).
ADDRESS_LIFETIME = 3
LIFETIME_RENEW = 1.0


def make_profile(cfg: Config):
    if cfg.protocol == "carp":
        return CarpProfile(cfg.secret, cfg.vhid, cfg.advbase, cfg.advskew)
    interval_cs = cfg.fast_interval_ms // 10 if cfg.fast else cfg.advbase * 100
    return VrrpProfile(cfg.vhid, cfg.priority, interval_cs)


@dataclass
class IfaceState:
    """What this unit knows about one interface and the partner behind it."""
    link_up: bool = True
    last_advert: float | None = None      # monotonic time of the last valid partner advert
    adverts_heard: int = 0
    ping_rtt: float | None = None         # partner ICMP
    ping_ok: bool | None = None
    target_misses: int = 0                # check ping target
    target_ok: bool | None = None


@dataclass
class Stats:
    drops: collections.Counter = field(default_factory=collections.Counter)
    adverts_sent: int = 0
    adverts_received: int = 0
    send_errors: int = 0
    effect_errors: int = 0
    transitions: int = 0
    timer_late_max: float = 0.0   # s the election's timer ran late at worst (loop lag)
    timer_late_over_interval: int = 0  # times it ran more than an advert interval late


class Daemon:
    def __init__(self, cfg: Config, store: Store):
        self.cfg = cfg
        self._configure(cfg)
        self.election = el.Election(self.params)
        self.state = {i.name: IfaceState() for i in cfg.interfaces}
        self.config = ConfigControl(cfg, store, is_active=self.is_active,
                                    active_address=lambda: str(self.primary_partner),
                                    on_apply=self.apply_version,
                                    ha_state=lambda: self.election.state.value)
        self.relay = AdvertRelay(self.config.sync, self.on_relayed_advert,
                                 lambda: self.election.state.value, self._our_advert)
        self.stats = Stats()
        self.sockets: dict[str, AdvertSocket] = {}
        self.counter = secrets.randbits(63)  # CARP replay counter starts random, like BSD
        self.shared = SharedAddresses(rt_priority=cfg.rt_priority)  # the loop is set in run()
        self.rt_priority = 0
        self._files = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="carpool-files")
        self._state_value, self._state_pending = "init", False
        self.fence = Fence(fence_timeout(self.params.advert_interval))
        self._renewed = float("-inf")  # when the held addresses' kernel lifetime was renewed
        self.events: collections.deque = collections.deque(maxlen=50)
        self.stopped = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._relay_timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task] = set()
        self._notifies: set[asyncio.Task] = set()  # hooks still running (awaited at shutdown)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.links: LinkMonitor | None = None
        self.health = HealthChecker(on_change=self._server_changed)
        self.doctor = DoctorAgent(self)
        self.relay.report_for = self.doctor.report_over_relay
        self.relay.on_report = self.doctor.on_relayed_report
        self.starts = StartRecord(cfg.config_dir or cfg.state_dir, cfg.restart_limit)
        self.pinger: Pinger | None = None
        self.pulse: Pulse | None = None
        self.l4 = L4Dataplane()
        self.l7 = HaproxyDataplane(Path(cfg.state_dir) / "haproxy")
        self.state_sync = ConntrackSync(Path(cfg.state_dir) / "conntrackd")
        self.web = WebUnit(self)  # WUI, REST API, /metrics: same loop, started in run()
        self.web.prepare()        # (built before the loop runs: see WebUnit.prepare)

    def _configure(self, cfg: Config) -> None:
        """Everything derived from the configuration (at start and on a new version)."""
        self.profile = make_profile(cfg)
        self.own = frozenset(i.own(cfg.role) for i in cfg.interfaces)
        # Ranks compare unit identities, not per-link sources: any partner address counts as
        # the partner's primary one, or the tie-break would differ per interface and flap.
        self.primary_partner = cfg.checked[0].partner(cfg.role)
        self.partner_identity = {i.partner(cfg.role): self.primary_partner
                                 for i in cfg.interfaces}
        self.params = self.profile.params(cfg.checked[0].own(cfg.role), cfg.preempt,
                                          cfg.initial_wait)
        self.ifaces = {i.name: i for i in cfg.interfaces}

    def shared_ips(self) -> list[IPv4Address]:
        return [c.ip for i in self.cfg.interfaces for c in i.shared]

    def is_active(self) -> bool:
        return self.election.state is el.State.MASTER

    def apply_version(self, version: Version) -> None:
        """Apply a new configuration version in place: the election keeps its state."""
        old, new = self.cfg, with_document(self.cfg, version.document)
        self.cfg = new
        log.info("configuration version %d applied (%s)", version.record.version,
                 ", ".join(version.record.what[:8]) or "no change")
        if self.loop is not None:
            self.health.update(new.document)
            self.refresh_dataplane()
        if (old.document.ha, old.document.interface) == (new.document.ha, new.document.interface):
            return
        gone = {(i.name, str(c)) for i in old.interfaces for c in i.shared} - \
               {(i.name, str(c)) for i in new.interfaces for c in i.shared}
        self._configure(new)
        self.election.params = self.params
        self.fence.timeout = fence_timeout(self.params.advert_interval)
        self.fence.install(self.shared_ips())
        for name in self.ifaces:
            self.state.setdefault(name, IfaceState())
        if self.loop is not None:
            self._open_sockets()
        if gone:
            self.shared.forget([c for _, c in gone], sorted(gone),
                               old.vmac_address if old.vmac else None)
        if self.is_active():
            self.take_addresses()
            self.send_garp()
        if self.loop is not None:
            self.spawn(self.state_sync.apply(new))

    def refresh_dataplane(self) -> None:
        """Re-apply both data planes from the current document and server health."""
        self.spawn(self.l4.apply(self.cfg.document, self.health.healthy))
        self.spawn(self.l7.apply(self.cfg, self.health.healthy))

    def _server_changed(self, key, up: bool) -> None:
        name, address, port = key
        vs = next((v for v in self.cfg.document.virtual_service if v.name == name), None)
        if vs is None:
            return
        if vs.type == "http":  # the runtime API: no reload for a health flip
            self.spawn(self.l7.set_server(vs, address, port, up))
        else:
            self.spawn(self.l4.apply(self.cfg.document, self.health.healthy))

    # -- time and the election ------------------------------------------------------------
    def now(self) -> float:
        return self.loop.time()

    def feed(self, event) -> None:
        before = self.election.state
        effects = self.election.handle(event, self.now())
        for effect in effects:
            try:
                self.apply(effect)
            except Exception:  # one failed effect must never stop the timer or the others
                self.stats.effect_errors += 1
                log.exception("applying %r failed", effect)
        if self.election.state is not before:
            self.stats.transitions += 1
            self.events.append({"time": time.time(), "old": before.value,
                                "new": self.election.state.value, "reason": self.election.reason})
            self._write_state()
        self._arm_timer()

    def _arm_timer(self) -> None:
        if self._timer:
            self._timer.cancel()
            self._timer = None
        deadline = self.election.deadline
        if deadline is not None:
            self._timer = self.loop.call_at(deadline, self._on_timer, deadline)

    def _on_timer(self, deadline: float) -> None:
        late = self.now() - deadline
        self.stats.timer_late_max = max(self.stats.timer_late_max, late)
        if late > self.params.advert_interval:
            self.stats.timer_late_over_interval += 1
        self.feed(el.Tick())

    def _write_state(self) -> None:
        """The state file (for monitoring scripts) on a thread, the latest state winning: a
        rename on a busy disk must not hold the transition's adverts."""
        self._state_value = self.election.state.value
        if not self._state_pending:
            self._state_pending = True
            self._files.submit(self._flush_state)

    def _flush_state(self) -> None:
        self._state_pending = False  # first: a change from here on submits another write
        path = Path(self.cfg.state_dir) / "state"
        tmp = path.with_suffix(".tmp")
        try:
            tmp.write_text(self._state_value + "\n")
            os.replace(tmp, path)
        except OSError as e:
            log.error("cannot write %s: %s", path, e)

    # -- effects ---------------------------------------------------------------------------
    def apply(self, effect) -> None:
        match effect:
            case el.SendAdvert(bow_out=bow_out, demote=demote):
                self.send_adverts(bow_out, demote)
            case el.TakeAddresses():
                self.take_addresses()
            case el.ReleaseAddresses():
                self.release_addresses()
            case el.SendGarp():
                self.send_garp()
            case el.RunNotify(new=new, old=old, reason=reason):
                if self.cfg.notify:
                    self._notifies.add(self.spawn(run_notify(
                        self.cfg.notify, new.value, old.value, reason, self.cfg.notify_timeout)))
            case _:
                log.error("unknown effect %r", effect)

    def send_adverts(self, bow_out: bool, demote: int) -> None:
        self.counter = (self.counter + 1) & (2**64 - 1)
        if not bow_out and self.is_active():
            self.keep_alive()
        for name, sock in self.sockets.items():
            iface = self.ifaces[name]
            source = iface.own(self.cfg.role)
            shared = advertised_addresses(self.cfg, iface)
            for dst in destinations(self.cfg, iface):
                payload = self.profile.encode(bow_out, demote, self.counter, shared, source, dst)
                if sock.send(payload, str(dst)):
                    self.stats.adverts_sent += 1
                else:
                    self.stats.send_errors += 1
        self.relay.send(demote, self.params.rank_preference, bow_out)

    def _vmac(self) -> str | None:
        return self.cfg.vmac_address if self.cfg.vmac else None

    def _items(self) -> list[tuple[str, str]]:
        return [(i.name, str(c)) for i in self.cfg.interfaces for c in i.shared]

    def keep_alive(self) -> None:
        """The active unit, each advert: the fence keeps the held addresses serving for another
        timeout; once a second their kernel lifetime is renewed (which re-adds one that went)."""
        now = self.now()
        self.fence.hold(self.shared_ips(), now)
        if now - self._renewed >= LIFETIME_RENEW:
            self._renewed = now
            self.shared.renew(self._items(), self._vmac(), ADDRESS_LIFETIME)
            self.loop.call_soon(self.update_demotion)  # netlink wedged: our addresses go

    def take_addresses(self) -> None:
        # Live in the fence first: the first packets to an address just added must pass.
        self.fence.hold(self.shared_ips(), self.now(), force=True)
        self._renewed = self.now()
        self.shared.take(self._items(), self._vmac(), ADDRESS_LIFETIME, announce=True)

    def release_addresses(self) -> None:
        self.fence.release()  # dark at once; the netlink removals follow on their thread
        self.shared.release(self._items(), self._vmac())

    def send_garp(self) -> None:
        self.shared.garp(self._items(), self._vmac(), self.cfg.garp_count)

    @property
    def held(self) -> list[str]:
        return self.shared.held

    def spawn(self, coro) -> asyncio.Task:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(self._notifies.discard)
        return task

    # -- input -----------------------------------------------------------------------------
    def on_readable(self, name: str) -> None:
        sock = self.sockets[name]
        shared = advertised_addresses(self.cfg, self.ifaces[name])
        for datagram in sock.recv_all():
            if self._sort_out(name, datagram):
                continue
            try:
                heard = self.profile.decode(datagram, self.own, shared)
            except DropError as e:
                self.stats.drops[e.reason.value] += 1
                log.debug("drop on %s: %s %s", name, e.reason.value, e.detail)
                continue
            self.stats.adverts_received += 1
            rank = heard.rank
            identity = self.partner_identity.get(heard.source)
            if identity is not None:
                rank = replace(rank, address=int(identity))
            st = self.state[name]
            st.last_advert = self.now()
            st.adverts_heard += 1
            self._heard(rank, heard.bow_out, name)

    def on_relayed_advert(self, demote: int, preference: int, bow_out: bool) -> None:
        """An advert the partner relayed over 6973 (node/relay.py): its rank, as the partner."""
        self._heard(el.Rank(demote, preference, int(self.primary_partner)), bow_out, "6973")

    def _heard(self, rank: el.Rank, bow_out: bool, where: str) -> None:
        if rank.demote > self.election.demote and self.links is not None:
            # Before taking over from a demoted master, make sure the same fault (a cut
            # cable is down on both ends) has not hit us too: carrier is polled, not pushed.
            self.links.refresh()
        self.feed(el.AdvertReceived(rank, bow_out, where))

    def _our_advert(self) -> tuple[int, int] | None:
        if not self.is_active():
            return None
        return self.election.demote, self.params.rank_preference

    def _relay_tick(self) -> None:
        """Every half advert interval: ask the partner to relay its adverts while no path brings
        them (a master asks too: two masters that cannot hear each other settle over 6973)."""
        heard = [self.state[i.name].last_advert for i in self.cfg.checked]
        self.relay.ask(wants_relay(heard, self.now(), self.params.advert_interval))
        self._relay_timer = self.loop.call_later(self.params.advert_interval / 2,
                                                 self._relay_tick)

    def _sort_out(self, name: str, datagram: bytes) -> bool:
        """Doctor probes go to the doctor (True: not an advert). An advert for our VHID from
        a stranger is noted as a foreign speaker, then decoded (and counted) as usual."""
        try:
            pkt = parse_ipv4(datagram)
        except DropError:
            return False  # the decoder counts it
        if pkt.protocol != PROTO_CARP or pkt.src in self.own:
            return False
        if probe.is_probe(pkt.payload):
            self.doctor.on_probe(name, pkt.src, pkt.payload)
            return True
        if pkt.src not in self.partner_identity and pkt.payload[1:2] == bytes([self.cfg.vhid]):
            self.doctor.note_foreign(name, pkt.src, pkt.payload)
        return False

    def on_link(self, ifname: str, up: bool) -> None:
        st = self.state.get(ifname)
        if st is None or st.link_up == up:
            return
        st.link_up = up
        log.info("%s: link %s", ifname, "up" if up else "down")
        self.update_demotion()

    def demote_reasons(self) -> tuple[str, ...]:
        reasons = []
        for iface in self.cfg.checked:
            st = self.state[iface.name]
            if not st.link_up:
                reasons.append(f"{iface.name}: link down")
            elif st.target_ok is False:
                reasons.append(f"{iface.name}: ping target {iface.ping_target} silent")
        if self.shared.wedged(ADDRESS_LIFETIME):
            reasons.append("netlink: the shared addresses could not be renewed")
        return tuple(reasons)

    def update_demotion(self) -> None:
        reasons = self.demote_reasons()
        if reasons != tuple(self.election.demote_reasons):
            self.feed(el.DemoteChanged(reasons))

    async def ping_loop(self, pinger: Pinger) -> None:
        """Partner status (for the WUI) and check targets, once per ping_interval."""
        partner_every = 1.0
        next_partner = 0.0
        while True:
            now = self.now()
            jobs = []
            if now >= next_partner:
                next_partner = now + partner_every
                for iface in self.cfg.interfaces:
                    jobs.append(self._ping_partner(pinger, iface))
            for iface in self.cfg.checked:
                if iface.ping_target is not None:
                    jobs.append(self._ping_target(pinger, iface))
            await asyncio.gather(*jobs)
            wait = min([partner_every] + [i.ping_interval for i in self.cfg.checked
                                          if i.ping_target is not None])
            await asyncio.sleep(wait)

    async def _ping_partner(self, pinger: Pinger, iface) -> None:
        rtt = await pinger.ping(str(iface.partner(self.cfg.role)), 0.9)
        st = self.state[iface.name]
        st.ping_rtt, st.ping_ok = rtt, rtt is not None

    async def _ping_target(self, pinger: Pinger, iface) -> None:
        rtt = await pinger.ping(str(iface.ping_target), min(1.0, iface.ping_interval))
        st = self.state[iface.name]
        st.target_misses = 0 if rtt is not None else st.target_misses + 1
        ok = st.target_misses < PING_MISSES
        if ok != st.target_ok:
            st.target_ok = ok
            if not ok:
                log.warning("%s: ping target %s silent", iface.name, iface.ping_target)
            self.update_demotion()

    def _open_sockets(self) -> None:
        """One advert socket per checked interface (opened or closed to match the config)."""
        wanted = {i.name: i for i in self.cfg.checked}
        for name in [n for n in self.sockets if n not in wanted]:
            self.loop.remove_reader(self.sockets[name].fileno())
            self.sockets.pop(name).close()
        for name, iface in wanted.items():
            if name in self.sockets:
                continue
            self.state[name].link_up = self.links.state(name)
            try:
                sock = AdvertSocket(name, str(iface.own(self.cfg.role)), self.cfg.transport)
            except OSError as e:
                log.error("%s: cannot open advert socket: %s", name, e)
                continue
            self.sockets[name] = sock
            self.loop.add_reader(sock.fileno(), self.on_readable, name)

    # -- forced failover -------------------------------------------------------------------
    def force_failover(self, request: dict | None = None) -> dict:
        """A graceful switch asked by an admin: only the active unit, only when the partner is
        heard (else nobody would serve); the partner takes over on our bow-out advert."""
        request = request or {}
        who = str(request.get("who") or "admin")
        try:
            hold = float(request.get("hold", 300.0))
        except (TypeError, ValueError):
            return {"error": f"hold: not a number of seconds: {request.get('hold')!r}"}
        if not 0 <= hold <= 86400:
            return {"error": f"hold: {hold:g} s is not within 0..86400"}
        if self.election.state is not el.State.MASTER:
            return {"error": f"this unit is {self.election.state.value}, not active: force "
                             f"failover on the active unit ({self.config.partner_address()})"}
        # A BACKUP does not advertise, so the partner's echo replies say it is there.
        heard = [name for name, st in self.state.items() if st.ping_ok]
        if not heard:
            return {"error": "the partner answers no ping on any interface: a failover now "
                             "could leave nobody serving; check the partner first"}
        log.warning("forced failover asked by %s (no preempting back for %g s)", who, hold)
        self.feed(el.Relinquish(f"forced failover by {who}", hold))
        return {"state": self.election.state.value, "reason": self.election.reason,
                "hold": hold, "partner_answers_on": heard}

    def pacify(self, request: dict | None = None) -> dict:
        """`carpool pacify [--clear]`: show or clear the reboot-loop mark."""
        if (request or {}).get("clear"):
            was = self.election.pacified
            self.starts.clear()
            self.feed(el.Pacify(False, f"cleared by {(request or {}).get('who') or 'admin'}"))
            return {"pacified": "", "was": was}
        return {"pacified": self.election.pacified}

    # -- doctor ----------------------------------------------------------------------------
    async def run_doctor(self, _request: dict | None = None) -> dict:
        observed = await self.doctor.run(self.pinger)
        return {"checks": [f.as_dict() for f in findings.evaluate(observed)],
                "observed": observed}

    # -- status ----------------------------------------------------------------------------
    def status(self, _request: dict | None = None) -> dict:
        now = self.now()
        e = self.election
        partner = {}
        for name, st in self.state.items():
            iface = self.ifaces[name]
            ago = None if st.last_advert is None else round(now - st.last_advert, 3)
            partner[name] = {
                "address": str(iface.partner(self.cfg.role)),
                "advert_seen_ago": ago,
                "advert_alive": ago is not None and ago <= e.params.master_down,
                "adverts_heard": st.adverts_heard,
                "ping_ok": st.ping_ok,
                "ping_rtt_ms": None if st.ping_rtt is None else round(st.ping_rtt * 1000, 3),
                "link_up": st.link_up, "check": iface.check, "heartbeat": iface.heartbeat,
                "ping_target": str(iface.ping_target) if iface.ping_target else None,
                "ping_target_ok": st.target_ok,
            }
        status = {
            "role": self.cfg.role, "state": e.state.value,
            "since": None if e.since is None else time.time() - (now - e.since),
            "since_ago": None if e.since is None else round(now - e.since, 3),
            "reason": e.reason, "protocol": self.cfg.protocol, "vhid": self.cfg.vhid,
            "advbase": self.cfg.advbase, "advskew": self.cfg.advskew,
            "priority": self.cfg.priority, "preempt": self.cfg.preempt,
            "transport": self.cfg.transport, "vmac": self._vmac(),
            "demote": len(e.demote_reasons), "demote_reasons": list(e.demote_reasons),
            "pacified": e.pacified,
            "partner": partner, "shared_held": list(self.held),
            "drops": dict(self.stats.drops),
            "counters": {"adverts_sent": self.stats.adverts_sent,
                         "adverts_received": self.stats.adverts_received,
                         "send_errors": self.stats.send_errors,
                         "effect_errors": self.stats.effect_errors,
                         "transitions": self.stats.transitions,
                         "timer_late_max_ms": round(self.stats.timer_late_max * 1000, 1),
                         "timer_late_over_interval": self.stats.timer_late_over_interval},
            "loop": {**(self.pulse.status() if self.pulse else {}),
                     "rt_priority": self.rt_priority},
            "timers": {"advert_interval": e.params.advert_interval,
                       "master_down": e.params.master_down,
                       "stall_limit": round(e.stall_limit(), 3),
                       "next_timer_in": None if e.deadline is None
                       else round(e.deadline - now, 3)},
            "events": list(self.events), "pid": os.getpid(),
            "config": {"version": self.config.store.current.record.version,
                       "hash": self.config.store.current.record.hash},
            "sync": self.config.sync.status(),
            "dataplane": {"l4": self.l4.status(), "l7": self.l7.status(),
                          "state_sync": self.state_sync.status(),
                          "servers": self.health.status()},
            "doctor": dict(self.doctor.counters),
            "fence": self.fence.status(),
            "addresses": self.shared.status(),
            "relay": self.relay.status(now),
        }
        warnings = findings.warnings(status, self.config.sync.partner_ha,
                                     self.doctor.recent_foreign(), time.time())
        status["warnings"] = [str(w) for w in warnings]
        status["warning_kinds"] = [w.kind.value for w in warnings]  # the kind of each, in order
        return status

    # -- life cycle ------------------------------------------------------------------------
    async def run(self) -> int:
        self.loop = self.shared.loop = asyncio.get_running_loop()
        self.rt_priority = realtime(self.cfg.rt_priority, "the event loop")
        timeout = watchdog_timeout(self.params.master_down, self.params.advert_interval,
                                   self.cfg.watchdog)
        pulse = self.pulse = Pulse.from_env(timeout)
        Path(self.cfg.state_dir).mkdir(parents=True, exist_ok=True)
        remove_shared_addresses(self.cfg)  # a starting unit first clears stale shared addresses
        self.fence.install(self.shared_ips())
        self.shared.warm_up()  # the first takeover must not pay for pyroute2's set-up
        if not await self.shared.drain(10.0):
            log.warning("netlink warm-up still running after 10 s")
        links = self.links = LinkMonitor(self.on_link)
        self._open_sockets()
        links.attach(self.loop)
        pinger = self.pinger = Pinger()
        self.health.pinger = pinger
        self.health.update(self.cfg.document)
        await self.l4.apply(self.cfg.document, self.health.healthy)
        await self.l7.apply(self.cfg, self.health.healthy)
        await self.state_sync.apply(self.cfg)
        server = await control.serve(self.cfg.socket_path,
                                     {"status": self.status, "ha.failover": self.force_failover,
                                      "doctor": self.run_doctor, "pacify": self.pacify,
                                      **self.config.handlers()})
        try:
            await self.config.sync.start()
        except OSError as e:  # sync is not the election: run without it and say why
            log.error("config sync cannot listen on port %d: %s", self.config.sync.port, e)
        self.spawn(self.relay.run())
        self._relay_tick()
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, self.stopped.set)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a closed terminal must not stop the HA
        log.info("unit %s starting: %s vhid %d, interfaces %s", self.cfg.role, self.cfg.protocol,
                 self.cfg.vhid, ", ".join(self.sockets))
        # watched from here: the start (pyroute2's import, the data planes: seconds on a busy
        pulse.start(self.loop)  # machine) holds no address and is no hang
        pacified = self.starts.on_start()
        if pacified:
            log.warning("pacified: %s; this unit stays standby", pacified)
            self.feed(el.Pacify(True, pacified))
        self.feed(el.Start())
        self.update_demotion()
        self.spawn(self.ping_loop(pinger))
        web = self.loop.create_task(self.web.run())  # never awaited before the election runs
        await self.stopped.wait()
        log.info("SIGTERM: bowing out")
        self.config.sync.close()  # no push (and no address job) after the bow-out
        self.feed(el.Shutdown())
        await self.shared.drain(2.0)     # the release queued by Shutdown, in order
        remove_shared_addresses(self.cfg)  # and whatever a stuck queue left
        self.shared.close()
        self.fence.remove()
        if self._notifies:  # the shutdown's own hook (and any still running) gets to finish
            await asyncio.wait(list(self._notifies), timeout=self.cfg.notify_timeout + 1)
        web.cancel()
        if self._relay_timer:
            self._relay_timer.cancel()
        await self.web.stop()
        for task in list(self._tasks):
            task.cancel()
        server.close()
        self.config.sync.close()
        self.health.close()
        await self.l4.clear()
        await self.l7.stop()
        await self.state_sync.stop()
        links.close()
        pinger.close()
        pulse.stop()
        for sock in self.sockets.values():
            sock.close()
        self._files.shutdown(wait=True)  # the last state lands
        return 0


def advertised_addresses(cfg: Config, iface) -> list[IPv4Address]:
    """The addresses an advert on `iface` carries (and a received one must carry).

    An interface without shared addresses (the heartbeat cable) carries all of the pair's:
    VRRP needs at least one, and the CARP HMAC then proves the same appliance on every link.
    """
    own = [c.ip for c in iface.shared]
    return own or [c.ip for i in cfg.interfaces for c in i.shared]


def destinations(cfg: Config, iface) -> list[IPv4Address]:
    if cfg.transport == "unicast":
        return [iface.partner(cfg.role)]
    if cfg.transport == "broadcast":
        return [IPv4Address("255.255.255.255")]
    return [MULTICAST]


def remove_shared_addresses(cfg: Config) -> bool:
    ok = True
    vmac = cfg.vmac_address if cfg.vmac else None
    for iface in cfg.interfaces:
        if not iface.shared:
            continue
        try:
            addresses.remove_stale(iface.name, [str(c) for c in iface.shared], vmac)
        except OSError as e:
            log.error("cannot remove shared addresses on %s: %s", iface.name, e)
            ok = False
    return ok


def bow_out_once(cfg: Config) -> None:
    """Used by the supervisor after the worker died: one bow-out advert on every checked link."""
    profile = make_profile(cfg)
    counter = secrets.randbits(63)
    for iface in cfg.checked:
        source = iface.own(cfg.role)
        try:
            sock = AdvertSocket(iface.name, str(source), cfg.transport)
        except OSError as e:
            log.warning("%s: cannot bow out: %s", iface.name, e)
            continue
        try:
            for dst in destinations(cfg, iface):
                sock.send(profile.encode(True, 0, counter, advertised_addresses(cfg, iface),
                                         source, dst), str(dst))
        finally:
            sock.close()


def dump_status(status: dict) -> str:
    return json.dumps(status, indent=2, sort_keys=True)
