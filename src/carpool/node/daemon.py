"""The unit daemon: wiring only. It builds the parts, starts them in order, applies new
configuration versions to them and stops them in order; each job lives in its own module:

    advert.py    the advert sockets: send, receive, classify     checks.py   links, pings
    driver.py    the election's events, timer and effects        holder.py   shared addresses
    relay.py     adverts over 6973 when no path brings them      doctor.py   the doctor's agent
    status.py    `carpool status`                                commands.py failover, pacify
    configd.py   versions, sync                                  view.py     what web/doctor see
    rides.py     the pulse and partner echoes on the advert turns

One event loop; decisions are made in carpool.ha.election.
"""

from __future__ import annotations

import asyncio
import signal

from .. import events
from ..config.ha import Config, with_document
from ..config.store import Store, Version
from ..dataplane.dataplanes import Dataplanes
from ..ha import election as el
from ..web.unit import WebUnit
from . import control, findings
from .advert import AdvertPaths, election_params
from .checks import PARTNER_EVERY, PARTNER_SLACK, Checks
from .commands import Commands
from .configd import ConfigControl
from .doctor import DoctorAgent
from .driver import ElectionDriver, Tasks
from .guard import Guard
from .handover import Handover
from .holder import AddressHolder
from .icmp import Pinger
from .links import LinkMonitor
from .liveness import Liveness, link_poll, settings
from .notify import run_notify
from .pacify import StartRecord
from .paths import Paths
from .relay import RELAY_SLACK, WANT_AFTER, AdvertRelay, later_check, wants_relay
from .rides import Rides
from .sched import realtime
from .status import StatusParts, unit_status
from .storeio import current_version
from .view import UnitView
from .watchdog import Pulse, watchdog_timeout

log = events.logger("carpool.daemon", events.Kind.DAEMON)
LINK_POLL = 0.25  # s: the carrier of a link whose driver may report late is read this often,
# or with each hello when the fast detector sends them more often (link_poll())
PULSE_SLACK = 1.0  # s the watchdog's beat may wait for an advert turn (node/rides.py)


class Daemon:
    def __init__(self, cfg: Config, store: Store):
        self.cfg = cfg
        self.paths: Paths = {}
        self.tasks = Tasks()
        # its effects (driver.Effects) are ours, carried out once run() feeds it events
        self.driver = ElectionDriver(el.Election(election_params(cfg)), cfg.state_dir, self)
        self.config = ConfigControl(
            cfg,
            store,
            is_active=self.driver.is_active,
            active_address=lambda: str(self.cfg.partner_address),
            on_apply=self.apply_version,
            ha_state=lambda: self.driver.state.value,
        )
        self.holder = AddressHolder(
            cfg,
            self.driver.election.params.advert_interval,
            self.driver.now,
            rt_priority=cfg.rt_priority,
        )
        self.relay = AdvertRelay(
            self.config.sync,
            self.on_relayed_advert,
            lambda: self.driver.state.value,
            self._our_advert,
        )
        self.starts = StartRecord(cfg.config_dir or cfg.state_dir, cfg.restart_limit)
        self.commands = Commands(self.driver, self.paths, self.starts, self.config.partner_address)
        self.dataplanes = Dataplanes(cfg.state_dir, self.tasks.spawn)
        self.handover = Handover(
            self.holder.fence, self.holder.shared.unlocal, self.dataplanes.l7, self.tasks.spawn
        )
        self.view = self._view()
        self.doctor = DoctorAgent(self.view)
        self.adverts = AdvertPaths(
            cfg,
            self.paths,
            on_advert=self._heard,
            on_again=self._heard_again,
            on_probe=self.doctor.on_probe,
            on_foreign=self.doctor.note_foreign,
        )
        self.config.sync.on_partner = self.adverts.partner_upgraded
        self.checks = Checks(cfg, self.paths, on_change=self.update_demotion)
        self.relay.report_for = self.doctor.report_over_relay
        self.relay.on_report = self.doctor.on_relayed_report
        self.status_parts = StatusParts(
            cfg,
            self.driver,
            self.paths,
            self.adverts,
            self.holder,
            self.config,
            self.dataplanes,
            self.doctor,
            self.relay,
            control.Access(cfg.control_gid, cfg.control_group),
            guard=Guard(),
            handover=self.handover,
        )
        self.pinger: Pinger | None = None
        self.links: LinkMonitor | None = None
        self.liveness: Liveness | None = None  # the fast detector, once running
        self.rides: Rides | None = None  # housekeeping on the advert turns, once running
        self.stopped = asyncio.Event()
        self._relay_timer: asyncio.TimerHandle | None = None
        self._relay_on = False  # from the start until the bow-out
        self.web = WebUnit(self.view)  # WUI, REST API, /metrics: same loop, started in run()
        self.web.prepare()  # (built before the loop runs: see WebUnit.prepare)

    def _view(self) -> UnitView:
        sync = self.config.sync
        return UnitView(
            config=lambda: self.cfg,
            status=self.status,
            ha_state=lambda: self.driver.state.value,
            version=lambda: (
                current_version(self.config.store).record.version,
                current_version(self.config.store).record.hash,
            ),
            document=lambda: current_version(self.config.store).document,
            handlers=lambda: {"status": self.status, **self.config.handlers()},
            failover=self.commands.failover,
            doctor=self.run_doctor,
            servers=lambda: self.dataplanes.servers(),
            dataplane_counters=lambda: self.dataplanes.counters(),
            stats=lambda: self.dataplanes.stats,
            paths=lambda: self.paths,
            advert_paths=lambda: self.adverts.path_names(),
            now=self.driver.now,
            held=lambda: self.holder.held,
            is_partner=lambda source: self.adverts.is_partner(source),
            send_probe=lambda payload: self.adverts.send_probe(payload),
            partner_ha=lambda: sync.partner_ha,
            sync_port=lambda: sync.port,
            probe_sync=sync.probe_partner,
            ask_doctor=self.relay.ask_doctor,
        )

    # -- the election's effects (driver.Effects) --------------------------------------------
    def send_adverts(self, bow_out: bool, demote: int) -> None:
        if not bow_out and self.driver.is_active() and self.holder.keep_alive():
            self.driver.loop.call_soon(self.update_demotion)  # netlink wedged: ours go
        self.adverts.send(bow_out, demote)
        self.relay.send(
            demote, self.driver.election.params.rank_preference, bow_out, self.adverts.last_counter
        )
        if self.rides is not None:
            self.rides.turn()  # the active unit's loop woke for them

    def take(self, announce: bool, handover: bool) -> None:
        if handover:  # its tables before the addresses: no packet of the old unit's is lost
            self.handover.forward(self.cfg)
        else:
            self.handover.end("we took over")
        self.holder.take(announce)

    def release(self, handover: bool) -> None:
        if handover:
            self.holder.release(*self.handover.finish(self.cfg))
        else:
            self.handover.end("we are standby")
            self.holder.release()

    def announce(self) -> None:
        self.holder.announce()

    def notify(self, new: str, old: str, reason: str) -> None:
        if self.cfg.notify:
            self.tasks.hooks.add(
                self.tasks.spawn(
                    run_notify(self.cfg.notify, new, old, reason, self.cfg.notify_timeout)
                )
            )

    # -- what the election hears -------------------------------------------------------------
    def _heard(self, rank: el.Rank, bow_out: bool, where: str) -> None:
        if rank.demote > self.driver.election.demote and self.links is not None:
            # Before taking over from a demoted master, make sure the same fault (a cut
            # cable is down on both ends) has not hit us too: carrier is polled, not pushed.
            self.links.refresh()
        self.driver.feed(el.AdvertReceived(rank, bow_out, where))
        if self.rides is not None:
            self.rides.turn()  # the standby's loop woke for it: the housekeeping rides along
        if self.liveness is not None:
            self.liveness.heard_advert(where)
        if self._relay_on and where != "6973":
            if self.relay.want:
                self._relay_tick()  # a path carries adverts again: stop asking now
            else:
                self._push_relay_check(where)

    def _heard_again(self, where: str) -> None:
        """A round the election has from another path: only this path's liveness is news."""
        if self.liveness is not None:
            self.liveness.heard_advert(where)

    def _link_changed(self, name: str, up: bool) -> None:
        self.checks.on_link(name, up)
        if self.liveness is not None:
            self.liveness.on_link(name, up)

    def on_relayed_advert(
        self, demote: int, preference: int, bow_out: bool, counter: int | None
    ) -> None:
        """An advert the partner relayed over 6973 (node/relay.py): its rank, as the partner;
        unless a path brought that round or a newer one, or, without a counter, while no longer
        asked for. (A relayed demote from during a split, handed over after the heal, made the
        healthier unit take over for one advert: its gratuitous ARP cost the clients 8 s.)"""
        verdict = self.adverts.relayed(counter)
        if verdict == "unknown":
            verdict = "news" if self.relay.want else "unasked"
        if verdict != "news":
            self.relay.counters[f"not_news_{verdict}"] += 1
            return
        self._heard(el.Rank(demote, preference, int(self.adverts.partner)), bow_out, "6973")

    def _our_advert(self) -> tuple[int, int, int | None] | None:
        if not self.driver.is_active():
            return None
        election = self.driver.election
        return election.demote, election.params.rank_preference, self.adverts.last_counter

    def _relay_tick(self) -> None:
        """Ask the partner to relay its adverts while no path brings them (a master asks too:
        two masters that cannot hear each other settle over 6973). Looked at again when the
        newest advert grows too old to count (each advert round pushes that back: while they
        come it never fires), at once when an advert arrives while we ask, and at each change
        of state (which the ask carries)."""
        if self._relay_timer is not None:
            self._relay_timer.cancel()
            self._relay_timer = None
        interval = self.driver.election.params.advert_interval
        heard = [self.paths[i.name].last_advert for i in self.cfg.checked]
        now = self.driver.now()
        want = wants_relay(heard, now, interval)
        self.relay.ask(want)
        recent = [t for t in heard if t is not None]
        if not want and recent:  # no sooner can `want` turn
            wait = max(recent) + WANT_AFTER * interval - now + RELAY_SLACK
            self._relay_timer = self.driver.loop.call_later(wait, self._relay_check_due)

    def _relay_check_due(self) -> None:
        self.relay.counters["checks_timed"] += 1  # (the lab test counts them: none while heard)
        self._relay_tick()

    def _push_relay_check(self, where: str) -> None:
        """An advert on a checked path: the check that asks for relayed adverts moves later."""
        timer = self._relay_timer
        if timer is None or not any(i.name == where for i in self.cfg.checked):
            return
        loop = self.driver.loop
        due = later_check(timer.when(), loop.time(), self.driver.election.params.advert_interval)
        if due is not None:
            timer.cancel()  # (a cancelled timer at the heap's head wakes nothing)
            self._relay_timer = loop.call_at(due, self._relay_check_due)

    def _on_transition(self, entry: dict) -> None:
        if self.liveness is not None:
            self.liveness.on_transition(entry)
        if self._relay_on:
            self._relay_tick()

    def update_demotion(self) -> None:
        reasons = tuple(self.checks.reasons() + self.holder.reasons())
        if reasons != tuple(self.driver.election.demote_reasons):
            self.driver.feed(el.DemoteChanged(reasons))

    # -- configuration -----------------------------------------------------------------------
    def apply_version(self, version: Version) -> None:
        """Apply a new configuration version in place: the election keeps its state."""
        old, new = self.cfg, with_document(self.cfg, version.document)
        # the daemon's configurations always carry their document (cli, with_document)
        assert old.document is not None and new.document is not None
        self._set_cfg(new)
        log.info(
            "configuration version %d applied (%s)",
            version.record.version,
            ", ".join(version.record.what[:8]) or "no change",
        )
        ha_changed = (old.document.ha, old.document.interface) != (
            new.document.ha,
            new.document.interface,
        )
        if self.driver.attached:
            self.dataplanes.apply(new, ha_changed)
            self.status_parts.guard.install(new, self.config.sync.port)
        if not ha_changed:
            return
        params = self.driver.election.params = election_params(new)
        self.adverts.configure(new)
        self.holder.reconfigure(old, new, params.advert_interval, self.driver.is_active())
        self._restart_liveness(params.advert_interval)

    def _start_liveness(self, loop: asyncio.AbstractEventLoop, advert_interval: float) -> Liveness:
        liveness = self.liveness = Liveness(
            self.cfg,
            on_gone=lambda reason: self.driver.feed(el.PartnerGone(reason)),
            link_up=lambda name: self.links is not None and self.links.known().get(name, False),
            now=self.driver.now,
            advert_interval=advert_interval,
        )
        self.status_parts.liveness = liveness
        liveness.start(loop)
        return liveness

    def _restart_liveness(self, advert_interval: float) -> None:
        """A version that changes what the fast detector was built from (its interval, the
        paths, the advert interval its waits follow): a new one, at once, in the unit's role.
        The partner's detector takes the new session as a restarted unit's."""
        old, links, loop = self.liveness, self.links, self.driver.loop
        if old is None or links is None or old.settings == settings(self.cfg, advert_interval):
            return
        old.close()  # (the late links' reads go back to the monitor's timer meanwhile)
        liveness = self._start_liveness(loop, advert_interval)
        links.set_poll_interval(link_poll(self.cfg, LINK_POLL, liveness.heart is not None))
        liveness.read_carriers(links)
        liveness.set_active(self.driver.is_active())
        log.info("fast detector rebuilt for the new version")

    def _set_cfg(self, cfg: Config) -> None:
        self.cfg = self.status_parts.cfg = cfg
        self.checks.configure(cfg)
        self.holder.cfg = cfg

    # -- control -----------------------------------------------------------------------------
    async def run_doctor(self, _request: dict | None = None) -> dict:
        observed = await self.doctor.run(self.pinger)
        return {"checks": [f.as_dict() for f in findings.evaluate(observed)], "observed": observed}

    def status(self, _request: dict | None = None) -> dict:
        return unit_status(self.status_parts)

    # -- life cycle --------------------------------------------------------------------------
    async def run(self) -> int:
        loop = self.tasks.loop = asyncio.get_running_loop()
        self.driver.attach(loop)
        self.holder.attach(loop)
        params = self.driver.election.params
        self.status_parts.rt_priority = realtime(self.cfg.rt_priority, "the event loop")
        timeout = watchdog_timeout(params.master_down, params.advert_interval, self.cfg.watchdog)
        pulse = self.status_parts.pulse = Pulse.from_env(timeout)
        rides = self.rides = self.status_parts.rides = Rides(loop)
        await self.holder.start()
        self.handover.clear()
        self.status_parts.guard.install(self.cfg, self.config.sync.port)
        watched = tuple(i.name for i in self.cfg.interfaces)
        self.driver.on_transition = self._on_transition
        liveness = self._start_liveness(loop, params.advert_interval)
        # the late links' carrier rides the hellos only where a Heart runs (it may not: UDP
        # 6975 taken); else the loop's own timer reads it, every LINK_POLL
        every = link_poll(self.cfg, LINK_POLL, liveness.heart is not None)
        links = self.links = LinkMonitor(self._link_changed, every, watched)
        self.status_parts.carrier = links.carrier
        self.adverts.attach(loop, links.state)
        links.attach(loop)
        liveness.read_carriers(links)
        pinger = self.pinger = Pinger()
        await self.dataplanes.start(self.cfg, pinger)
        server = await control.serve(
            self.cfg.socket_path,
            {
                "status": self.status,
                "ha.failover": self.commands.failover,
                "doctor": self.run_doctor,
                "pacify": self.commands.pacify,
                **self.config.handlers(),
            },
            self.status_parts.control,
        )
        try:
            await self.config.sync.start()
        except OSError as e:  # sync is not the election: run without it and say why
            log.error("config sync cannot listen on port %d: %s", self.config.sync.port, e)
        self.tasks.spawn(self.relay.run())
        self._relay_on = True
        self._relay_tick()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopped.set)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a closed terminal must not stop the HA
        log.info(
            "unit %s starting: %s vhid %d, advert paths %s",
            self.cfg.role,
            self.cfg.protocol,
            self.cfg.vhid,
            ", ".join(self.adverts.path_names()),
        )
        # watched from here: the start (pyroute2's import, the data planes: seconds on a busy
        pulse.start(loop, rides, PULSE_SLACK)  # machine) holds no address and is no hang
        pacified = self.starts.on_start()
        if pacified:
            log.warning("pacified: %s; this unit stays standby", pacified)
            self.driver.feed(el.Pacify(True, pacified))
        self.driver.feed(el.Start())  # (its transition tells the detector we are a standby)
        self.update_demotion()
        self.tasks.spawn(self.checks.ping_loop(pinger))
        rides.add(
            "partner echoes", PARTNER_EVERY, PARTNER_SLACK, lambda: self.checks.echo_partner(pinger)
        )
        web = loop.create_task(self.web.run())  # never awaited before the election runs
        await self.stopped.wait()
        log.info("SIGTERM: bowing out")
        self.config.sync.close()  # no push (and no address job) after the bow-out
        self.driver.feed(el.Shutdown())
        # a planned failover: HAProxy finishes our HTTP connections before it stops
        assert self.cfg.document is not None  # (the daemon's always carry it)
        if not await self.handover.wait(self.cfg.document.ha.handover_drain + 1.0):
            log.warning("the handover did not end in time")
        self.handover.close()
        await self.holder.stop()
        if self.tasks.hooks:  # the shutdown's own hook (and any still running) gets to finish
            await asyncio.wait(list(self.tasks.hooks), timeout=self.cfg.notify_timeout + 1)
        web.cancel()
        self._relay_on = False
        if self._relay_timer:
            self._relay_timer.cancel()
        await self.web.stop()
        self.tasks.cancel_all()
        server.close()
        self.config.sync.close()
        await self.dataplanes.stop()
        self.status_parts.guard.remove()
        if self.liveness is not None:  # (a new version may have rebuilt it)
            self.liveness.close()  # first: its thread reads the links' carrier
        links.close()
        pinger.close()
        pulse.stop()
        rides.close()
        self.adverts.close()
        self.driver.close()  # the last state lands
        return 0
