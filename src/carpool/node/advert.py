"""The advert paths: one raw socket per checked interface, adverts sent on each, and every
received datagram judged once (ha/classify.py) and handed to whoever owns its kind.

    socket readable -> recv_all (ingress and own checks) -> strangers' token buckets
        -> classify -> on_advert (the election) / on_probe (the doctor) / a counted drop

On a dual-stack link a second socket speaks IPv6 (to ff02::12, or the partner's IPv6 address):
each advert round goes out in both families, and an advert heard in either keeps the link's
path alive. The election does not know families: one appliance, one rank.

Each datagram is handled on its own: an exception from judging it or from a callback is
counted as internal_error (its traceback logged once per 10 s per kind) and the batch goes on.
"""

from __future__ import annotations

import asyncio
import collections
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from ipaddress import IPv4Address, IPv6Address

from .. import events
from ..config.ha import Config, Interface
from ..ha import election as el
from ..ha.classify import Kind, Packet, Verdict, classify, classify_packet
from ..ha.drops import DropReason
from ..ha.profile import CarpProfile, Heard, SealedProfile, VrrpProfile
from ..ha.replay import ReplayGuard
from ..ha.sealed import advert_key
from .counter import AdvertCounter
from .limits import RateLimitedLog, TokenBuckets
from .paths import IfaceState, Paths
from .rawsock import AdvertSocket, AdvertSocket6, destinations

log = events.logger("carpool.daemon", events.Kind.DAEMON)
# Datagrams from anyone but the partner (other VRRP routers, a foreign speaker, a flood): each
# source may cost this many judgements a second, and all of them together the TOTAL ones; the
# rest are counted rate_limited, nothing more. The partner's are never limited. A VRRP router
# sends 1 advert/s; a foreign fast pair (up to 100/s) is still judged, and noted, 50 times a second.
STRANGER_RATE, STRANGER_BURST = 50.0, 100.0
STRANGERS_TOTAL_RATE, STRANGERS_TOTAL_BURST = 500.0, 1000.0


Profile = CarpProfile | VrrpProfile | SealedProfile


def carries(profile: Profile, addresses: list, version: int) -> bool:
    """Whether an advert of `profile` in IP `version` has something to say: a VRRP advert
    carries its own family's addresses and needs one (CARP's and carpool's cover all)."""
    return not isinstance(profile, VrrpProfile) or any(a.version == version for a in addresses)


def path6(name: str) -> str:
    """The name of an interface's IPv6 advert path (the counter rule's key, the doctor's)."""
    return f"{name}/ipv6"


def make_profile(cfg: Config) -> Profile:
    """protocol vrrp3: VRRPv3 as keepalived speaks it (no authentication). protocol carp with
    ha.auth = "carp": BSD CARP / ucarp (their HMAC). The default, ha.auth = "carpool": the
    carpool advert with CARP's timers, or in the fast profile VRRP-style centisecond ones."""
    if cfg.protocol == "vrrp3":
        interval_cs = cfg.fast_interval_ms // 10 if cfg.fast else cfg.advbase * 100
        return VrrpProfile(cfg.vhid, cfg.priority, interval_cs)
    if cfg.fast:  # only with ha.auth = "carpool" (config/ha.py refuses CARP below a second)
        base: CarpProfile | VrrpProfile = VrrpProfile(
            cfg.vhid, cfg.priority, cfg.fast_interval_ms // 10
        )
    else:
        base = CarpProfile(cfg.secret, cfg.vhid, cfg.advbase, cfg.advskew)
    if cfg.auth == "carp":
        return base
    return SealedProfile(base, advert_key(cfg.secret), cfg.vhid)


def election_params(cfg: Config) -> el.Params:
    """The election's timers and rank from the configuration (the supervisor's watchdog too)."""
    return make_profile(cfg).params(cfg.own_address, cfg.preempt, cfg.initial_wait)


def advertised_addresses(cfg: Config, iface: Interface) -> list[IPv4Address | IPv6Address]:
    """The addresses an advert on `iface` carries (and a received one must carry), both
    families: CARP's HMAC covers all of them whatever the advert's family; a VRRP advert
    carries those of its own family (ha/profile.py).

    An interface without shared addresses (the heartbeat cable) carries all of the pair's:
    VRRP needs at least one, and the CARP HMAC then proves the same appliance on every link.
    """
    own = [c.ip for c in iface.shared]
    return own or [c.ip for i in cfg.interfaces for c in i.shared]


@dataclass
class AdvertCounters:
    drops: collections.Counter = field(default_factory=collections.Counter)  # by DropReason
    sent: int = 0
    received: int = 0
    send_errors: int = 0
    stale: int = 0  # carpool adverts of a round older than one heard on another path
    again: int = 0  # carpool adverts of a round already heard on another path


class AdvertPaths:
    def __init__(
        self,
        cfg: Config,
        paths: Paths,
        *,
        on_advert: Callable[[el.Rank, bool, str], None],
        on_probe: Callable[[str, IPv4Address | IPv6Address, bytes], None],
        on_foreign: Callable[[str, IPv4Address | IPv6Address, bytes], None],
        on_again: Callable[[str], None] = lambda _interface: None,
        clock: Callable[[], float] = time.monotonic,
    ):
        """on_advert(rank, bow_out, interface): a valid partner advert, ranked as the partner.
        on_probe / on_foreign(interface, source, payload): a doctor probe; an advert for our
        VHID from a stranger (judged as usual afterwards). on_again(interface): a carpool
        advert of a round on_advert had from another path (a sign of life on this one).
        clock: the loop's (attach sets it)."""
        self.clock = clock
        self._strangers = TokenBuckets(
            STRANGER_RATE,
            STRANGER_BURST,
            total_rate=STRANGERS_TOTAL_RATE,
            total_burst=STRANGERS_TOTAL_BURST,
            clock=lambda: self.clock(),
        )
        self._errors = RateLimitedLog(log, clock=lambda: self.clock())
        self.paths = paths
        self.on_advert, self.on_probe, self.on_foreign = on_advert, on_probe, on_foreign
        self.on_again = on_again
        self.counters = AdvertCounters()
        self.sockets: dict[str, AdvertSocket] = {}
        self.sockets6: dict[str, AdvertSocket6] = {}  # dual-stack links
        self.counter = secrets.randbits(63)  # CARP's and VRRP's: starts random, like BSD
        self._counter: AdvertCounter | None = None  # carpool adverts': rises across restarts
        self.replay = ReplayGuard()
        self.newest = -1  # the highest carpool advert counter accepted on any path
        self.last_counter: int | None = None  # our last round's (relayed with it, node/relay.py)
        self.partner_form: str | None = None  # the form the partner was last heard in
        self.partner_sealed = False  # it spoke the carpool form since we started
        self._loop: asyncio.AbstractEventLoop | None = None
        self._link_up: Callable[[str], bool] = lambda _name: True
        self.configure(cfg)

    def configure(self, cfg: Config) -> None:
        """Everything derived from the configuration (at start and on a new version)."""
        self.cfg = cfg
        self.profile = make_profile(cfg)
        sealed = isinstance(self.profile, SealedProfile)
        if sealed != getattr(self, "sealed", sealed):
            self.newest = -1  # another counter's sequence from now on (the guard is per path)
        self.sealed = sealed
        self.partner = cfg.partner_address
        # the partner's addresses on every link, both families (its rank's identity is always
        # self.partner: see _heard)
        self.partner_addresses = {
            a
            for i in cfg.interfaces
            for a in (i.partner(cfg.role), i.partner6(cfg.role))
            if a is not None
        }
        self._partner_sources = {a.packed for a in self.partner_addresses}  # as in a header
        self.ifaces = {i.name: i for i in cfg.interfaces}
        self._partner_on = {i.name: i.partner4(cfg.role) for i in cfg.interfaces}
        # VRRPv3 over IPv6 speaks from link-local addresses (RFC 9568), which no
        # configuration names: there, any link-local source on the link is the partner's
        self._vrrp6 = isinstance(self.profile, VrrpProfile)
        self._carried = {i.name: advertised_addresses(cfg, i) for i in cfg.interfaces}
        for name in self.ifaces:
            self.paths.setdefault(name, IfaceState())
        if self._loop is not None:
            self._open_sockets(self._loop)

    def attach(self, loop: asyncio.AbstractEventLoop, link_up: Callable[[str], bool]) -> None:
        self._loop, self._link_up = loop, link_up
        self.clock = loop.time
        if self.sealed and self._counter is None:  # its file written at start, not mid-round
            self._counter = AdvertCounter(self.cfg.state_dir)
        self._open_sockets(loop)

    def is_partner(self, source: IPv4Address | IPv6Address) -> bool:
        return source in self.partner_addresses

    @property
    def speaks_legacy(self) -> bool:
        """The partner was last heard in an older release's form (and never in the carpool
        form since we started): answer in that form too until it speaks the carpool one."""
        return self.sealed and self.partner_form not in (None, SealedProfile.form)

    def forms(self) -> list[Profile]:
        """The profiles an advert round is sent in: ours, and the partner's older one while it
        speaks that (sealed first: a partner on this release takes it and drops the other)."""
        if self.speaks_legacy and isinstance(self.profile, SealedProfile):
            return [self.profile, self.profile.base]
        return [self.profile]

    def auth_status(self) -> dict:
        """What status, the WUI and the doctor say about the adverts' authentication."""
        sending = [p.form for p in self.forms()]
        return {
            "auth": "carpool"
            if self.sealed
            else ("none" if self.cfg.protocol == "vrrp3" else "carp"),
            "sending": sending,
            "partner_form": self.partner_form,
            "downgrades": self.counters.drops[DropReason.DOWNGRADE],
            "replays": self.counters.drops[DropReason.REPLAYED],
        }

    def partner_upgraded(self) -> None:
        """The partner runs a release with the carpool advert (its sync handshake says so):
        stop answering in the older form, also while it is a standby that sends nothing."""
        if self.speaks_legacy:
            log.info(
                "the partner runs a release with the carpool advert: older form no longer sent"
            )
            self.partner_form = SealedProfile.form

    # -- send ------------------------------------------------------------------------------
    def _next_counter(self) -> int:
        if not self.sealed:
            self.counter = (self.counter + 1) & (2**64 - 1)
            return self.counter
        if self._counter is None:
            self._counter = AdvertCounter(self.cfg.state_dir)
        return self._counter.next()

    def send(self, bow_out: bool, demote: int) -> None:
        counter = self._next_counter()
        # relayed with it: only a carpool counter (CARP's and VRRP's start anywhere)
        self.last_counter = counter if self.sealed else None
        forms = self.forms()
        for name, sock in self.sockets.items():  # IPv4: links where both units have it
            iface = self.ifaces[name]
            source, partner = iface.own4(self.cfg.role), iface.partner4(self.cfg.role)
            assert source is not None and partner is not None  # _open_sockets saw to it
            for dst in destinations(self.cfg.transport, partner):
                for profile in forms:
                    if not carries(profile, self._carried[name], 4):
                        continue
                    payload = profile.encode(
                        bow_out, demote, counter, self._carried[name], source, dst
                    )
                    if sock.send(payload, str(dst)):
                        self.counters.sent += 1
                    else:
                        self.counters.send_errors += 1
        for name, sock6 in self.sockets6.items():
            self._send6(name, sock6, bow_out, demote, counter)

    def _send6(
        self, name: str, sock: AdvertSocket6, bow_out: bool, demote: int, counter: int
    ) -> None:
        """This round's advert in IPv6 (our own form only: an older release speaks no IPv6)."""
        partner6 = self.ifaces[name].partner6(self.cfg.role)
        source = sock.sender()
        carried = self._carried[name]
        if partner6 is None or not carries(self.profile, carried, 6):
            return
        if source is None:  # no link-local address yet (a link just up): next round
            self.counters.send_errors += 1
            return
        for dst in destinations(self.cfg.transport, partner6):
            payload = self.profile.encode(bow_out, demote, counter, carried, source, dst)
            if sock.send(payload, str(dst), source):
                self.counters.sent += 1
            else:
                self.counters.send_errors += 1

    def path_names(self) -> list[str]:
        """The doctor's paths: each advert socket's interface, and `<name>/ipv6` for each
        IPv6 one (a switch may drop one family's adverts and not the other's)."""
        return list(self.sockets) + [path6(name) for name in self.sockets6]

    def send_probe(self, payload: bytes) -> dict[str, int]:
        """A doctor probe on every advert socket to every advert destination: sent per path."""
        sent = {}
        for name, sock in self.sockets.items():
            partner = self._partner_on[name]
            assert partner is not None  # an IPv4 socket only where the partner has IPv4
            sent[name] = sum(
                sock.send(payload, str(dst)) for dst in destinations(self.cfg.transport, partner)
            )
        for name, sock6 in self.sockets6.items():
            # from the configured address, also in VRRP mode: the doctor answers the partner only
            iface = self.ifaces[name]
            partner6, source = iface.partner6(self.cfg.role), iface.own6(self.cfg.role)
            sent[path6(name)] = (
                0
                if partner6 is None or source is None
                else sum(
                    sock6.send(payload, str(dst), source)
                    for dst in destinations(self.cfg.transport, partner6)
                )
            )
        return sent

    # -- receive ---------------------------------------------------------------------------
    def on_readable(self, name: str) -> None:
        """Judge every queued datagram, each on its own: whatever one of them does (a decoder's
        or a callback's exception included) costs the others nothing. Never raises."""
        drops = self.counters.drops
        for datagram in self._batch(self.sockets[name], name):
            source = datagram[12:16]  # the IPv4 source, unparsed: the cheapest look at it
            if source not in self._partner_sources and not self._strangers.allow(source):
                drops[DropReason.RATE_LIMITED] += 1  # and no further work
                continue
            self._judge(name, name, len(datagram), partial(self._classify4, datagram, name))

    def on_readable6(self, name: str) -> None:
        """on_readable for the link's IPv6 socket: the same judgement, per packet."""
        drops = self.counters.drops
        for pkt in self._batch(self.sockets6[name], path6(name)):
            source = pkt.src.packed
            known = source in self._partner_sources or (self._vrrp6 and pkt.src.is_link_local)
            if not known and not self._strangers.allow(source):
                drops[DropReason.RATE_LIMITED] += 1
                continue
            self._judge(name, path6(name), len(pkt.payload), partial(self._classify6, pkt, name))

    def _batch(self, sock: AdvertSocket | AdvertSocket6, path: str) -> list:
        """What the socket has queued; a failure to read is counted and logged, never raised."""
        try:
            return sock.recv_all()
        except Exception as e:
            self.counters.drops[DropReason.INTERNAL_ERROR] += 1
            self._errors.exception(
                ("recv", path, type(e).__name__), "advert path on %s: reading failed", path
            )
            return []

    def _classify4(self, datagram: bytes, name: str) -> Verdict:
        return classify(
            datagram,
            partner=self._partner_on[name],
            vhid=self.cfg.vhid,
            decoder=self.profile,
            addresses=self._carried[name],
        )

    def _classify6(self, pkt: Packet, name: str) -> Verdict:
        return classify_packet(
            pkt,
            partner=self.ifaces[name].partner6(self.cfg.role),
            vhid=self.cfg.vhid,
            decoder=self.profile,
            addresses=self._carried[name],
            link_local_partner=self._vrrp6,
        )

    def _judge(self, name: str, path: str, size: int, judge: Callable[[], Verdict]) -> None:
        """One datagram: judged, then handed on or counted. Never raises. `path`: the link,
        and the family for IPv6 (the counter rule's key)."""
        drops = self.counters.drops
        stage = "classify"
        try:
            verdict = judge()
            if verdict.foreign:
                assert verdict.source is not None  # judged on a parsed packet: it has one
                stage = "on_foreign"
                self.on_foreign(name, verdict.source, verdict.payload)
            if verdict.kind is Kind.PROBE:
                assert verdict.source is not None  # likewise
                stage = "on_probe"
                self.on_probe(path, verdict.source, verdict.payload)  # the doctor's path
            elif verdict.kind is Kind.DROP:
                drops[verdict.reason] += 1
                log.debug("drop on %s: %s", path, verdict.drop)
            else:
                assert verdict.heard is not None  # an ADVERT verdict carries it
                stage = "on_advert"
                self._heard(name, verdict.heard, path)
        except Exception as e:
            drops[DropReason.INTERNAL_ERROR] += 1
            self._errors.exception(
                (stage, type(e).__name__),
                "advert path on %s: %s failed on a datagram of %d bytes",
                path,
                stage,
                size,
            )

    def _heard(self, name: str, heard: Heard, path: str) -> None:
        if not self._form_accepted(path, heard):
            return
        self.counters.received += 1
        st = self.paths[name]
        st.last_advert = self.clock()
        st.adverts_heard += 1
        if heard.counter is not None and heard.form == SealedProfile.form:
            # One round carries one counter on every path: a lower one is an older round
            # read late (a loop that stalled reads each socket's backlog in turn). It proves
            # its path alive; the election heard newer news already and must not go back.
            if heard.counter < self.newest:
                self.counters.stale += 1
                return
            if heard.counter == self.newest:  # the same fields as on the path read first
                self.counters.again += 1
                self.on_again(name)
                return
            self.newest = heard.counter
        # Ranks compare unit identities, not per-link sources (or the tie-break would differ
        # per link and flap): classify let only the partner through, so the rank is its own.
        rank = replace(heard.rank, address=int(self.partner))
        self.on_advert(rank, heard.bow_out, name)

    def relayed(self, counter: int | None) -> str:
        """A relayed advert's round (6973), by its counter: "news" for the election; "again"
        (a path brought it) or "stale" (a path brought a newer one: a connection delivers what
        a fault held back after the heal); "unknown" without a carpool counter to judge by (an
        older release relays none, CARP's and VRRP's start anew with the partner's daemon)."""
        if counter is None or not self.sealed or not self.partner_sealed:
            return "unknown"
        if counter < self.newest:
            return "stale"
        if counter == self.newest:
            return "again"
        self.newest = counter  # the paths' copies of this round are "again" now
        return "news"

    def _form_accepted(self, path: str, heard: Heard) -> bool:
        """The counter rule for carpool adverts; an older release's form only from a partner
        that has not spoken the carpool form since we started (a rolling upgrade)."""
        drops = self.counters.drops
        if heard.form == SealedProfile.form:
            # per path and family: one round sends the same counter in IPv4 and IPv6
            if heard.counter is None or not self.replay.accept(path, heard.counter):
                drops[DropReason.REPLAYED] += 1
                return False
            self.partner_sealed = True
        elif self.sealed and self.partner_sealed:
            drops[DropReason.DOWNGRADE] += 1
            return False
        if heard.form != self.partner_form:
            log.info(
                "the partner speaks the %s advert form%s",
                heard.form,
                ""
                if heard.form == self.profile.form
                else " (an older release): answered in it too until it speaks the carpool form",
            )
            self.partner_form = heard.form
        return True

    # -- sockets ---------------------------------------------------------------------------
    def _open_sockets(self, loop: asyncio.AbstractEventLoop) -> None:
        """Per checked interface an IPv4 advert socket and an IPv6 one, each where both units
        have an address of that family on it (opened or closed to match the config)."""
        wanted = {i.name: i for i in self.cfg.checked}
        role = self.cfg.role
        wanted4 = {
            name: iface
            for name, iface in wanted.items()
            if iface.own4(role) is not None and iface.partner4(role) is not None
        }
        for name in [n for n in self.sockets if n not in wanted4]:
            loop.remove_reader(self.sockets[name].fileno())
            self.sockets.pop(name).close()
        for name in wanted:
            if name not in self.sockets and name not in self.sockets6:
                self.paths[name].link_up = self._link_up(name)
        self._open_sockets6(loop, wanted)
        for name, iface in wanted4.items():
            if name in self.sockets:
                continue
            try:
                sock = AdvertSocket(
                    name,
                    str(iface.own4(role)),
                    self.cfg.transport,
                    drops=self.counters.drops,
                )
            except OSError as e:
                log.error("%s: cannot open advert socket: %s", name, e)
                continue
            self.sockets[name] = sock
            loop.add_reader(sock.fileno(), self.on_readable, name)

    def _open_sockets6(self, loop: asyncio.AbstractEventLoop, wanted: dict[str, Interface]) -> None:
        role = self.cfg.role
        wanted6 = {
            name: iface
            for name, iface in wanted.items()
            if iface.own6(role) is not None and iface.partner6(role) is not None
        }
        for name in list(self.sockets6):
            sock = self.sockets6[name]
            iface = wanted6.get(name)
            if (
                iface is None
                or sock.source != self._source6(iface)
                or sock.transport != self.cfg.transport
            ):
                loop.remove_reader(sock.fileno())
                self.sockets6.pop(name).close()
        for name, iface in wanted6.items():
            if name in self.sockets6:
                continue
            try:
                sock6 = AdvertSocket6(
                    name, self._source6(iface), self.cfg.transport, drops=self.counters.drops
                )
            except OSError as e:
                log.error("%s: cannot open IPv6 advert socket: %s", name, e)
                continue
            self.sockets6[name] = sock6
            loop.add_reader(sock6.fileno(), self.on_readable6, name)

    def _source6(self, iface: Interface) -> IPv6Address | None:
        """VRRPv3 speaks from the link-local address (None: looked up as it comes and goes);
        carpool and CARP adverts from the unit's configured IPv6 address."""
        return None if self._vrrp6 else iface.own6(self.cfg.role)

    def close(self) -> None:
        for sock in self.sockets.values():
            sock.close()
        for sock6 in self.sockets6.values():
            sock6.close()


def bow_out_once(cfg: Config) -> None:
    """Used by the supervisor after the worker died: one bow-out advert on every checked link
    (a carpool advert above every counter the worker sent). A partner on an older release
    (a rolling upgrade) does not take it, and takes over after master-down instead."""
    profile = make_profile(cfg)
    sealed = isinstance(profile, SealedProfile)
    counter = AdvertCounter(cfg.state_dir).next() if sealed else secrets.randbits(63)
    for iface in cfg.checked:
        carried = advertised_addresses(cfg, iface)
        _bow_out4(cfg, profile, iface, counter, carried)
        _bow_out6(cfg, profile, iface, counter, carried)


def _bow_out4(cfg: Config, profile: Profile, iface: Interface, counter: int, carried: list) -> None:
    source, partner = iface.own4(cfg.role), iface.partner4(cfg.role)
    if source is None or partner is None or not carries(profile, carried, 4):
        return
    try:
        sock = AdvertSocket(iface.name, str(source), cfg.transport)
    except OSError as e:
        log.warning("%s: cannot bow out: %s", iface.name, e)
        return
    try:
        for dst in destinations(cfg.transport, partner):
            sock.send(profile.encode(True, 0, counter, carried, source, dst), str(dst))
    finally:
        sock.close()


def _bow_out6(cfg: Config, profile: Profile, iface: Interface, counter: int, carried: list) -> None:
    own6, partner6 = iface.own6(cfg.role), iface.partner6(cfg.role)
    if own6 is None or partner6 is None:
        return
    vrrp = isinstance(profile, VrrpProfile)
    if not carries(profile, carried, 6):
        return
    try:
        sock = AdvertSocket6(iface.name, None if vrrp else own6, cfg.transport)
    except OSError as e:
        log.warning("%s: cannot bow out over IPv6: %s", iface.name, e)
        return
    try:
        source = sock.sender()
        if source is None:
            return
        for dst in destinations(cfg.transport, partner6):
            sock.send(profile.encode(True, 0, counter, carried, source, dst), str(dst), source)
    finally:
        sock.close()
