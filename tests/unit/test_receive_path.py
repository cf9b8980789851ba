"""The advert path never raises and bounds what strangers cost: each datagram of a batch is
judged on its own (a poison datagram between two adverts loses neither advert), an exception is
a counted internal_error with a rate-limited traceback, strangers are rate-limited per source,
and the doctor's table of foreign speakers stays bounded."""

from __future__ import annotations

import itertools
import logging
from ipaddress import IPv4Address
from types import SimpleNamespace

import pytest

from carpool.config.ha import parse_config
from carpool.ha import probe
from carpool.ha.ipv4 import Ipv4Packet
from carpool.node.advert import AdvertPaths, make_profile
from carpool.node.doctor import DoctorAgent
from carpool.node.limits import RateLimitedLog, TokenBuckets

OWN, PARTNER = IPv4Address("198.18.0.11"), IPv4Address("198.18.0.12")
STRANGER, GROUP = IPv4Address("198.18.0.99"), IPv4Address("224.0.0.18")
SHARED = [IPv4Address("198.18.0.10")]
ETH0 = {"name": "eth0", "first": str(OWN), "second": str(PARTNER), "shared": ["198.18.0.10/24"]}


def config(*interfaces: dict):
    return parse_config(
        {"unit": {"role": "first", "secret": "unit-test-secret"}, "interface": list(interfaces)}
    )


CFG = config(ETH0)
PROFILE = make_profile(CFG)
COUNTER = itertools.count(1)  # carpool adverts: the counter must rise


def advert(src: IPv4Address = PARTNER, bow_out: bool = False) -> bytes:
    payload = PROFILE.encode(bow_out, 0, next(COUNTER), SHARED, src, GROUP)
    return Ipv4Packet(src, GROUP, 255, 112, payload).pack()


def datagram(payload: bytes, src: IPv4Address = PARTNER) -> bytes:
    return Ipv4Packet(src, GROUP, 255, 112, payload).pack()


POISON_PROBE = datagram(probe.MAGIC + b"[" * 1150)  # the finding: RecursionError in the doctor


class Batch:
    """A fake AdvertSocket: recv_all hands over what is queued (256 at most, like the real)."""

    def __init__(self, *datagrams: bytes):
        self.queue = list(datagrams)

    def recv_all(self) -> list[bytes]:
        out, self.queue = self.queue[:256], self.queue[256:]
        return out

    def close(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Receiver:
    """AdvertPaths on one fake socket; what reaches each callback is recorded."""

    def __init__(self, on_probe=None, on_foreign=None, on_advert=None):
        self.adverts: list = []  # the partner's (its bow-out flags)
        self.strangers: list = []  # adverts from others that reached the election: none may
        self.probes: list = []
        self.foreign: list = []
        self.clock = Clock()
        self.paths = AdvertPaths(
            CFG,
            {},
            on_advert=on_advert or self._advert,
            on_probe=on_probe or (lambda *a: self.probes.append(a)),
            on_foreign=on_foreign or (lambda *a: self.foreign.append(a)),
            clock=self.clock,
        )

    def _advert(self, rank, bow_out: bool, name: str) -> None:
        (self.adverts if rank.address == int(PARTNER) else self.strangers).append(bow_out)

    def feed(self, *datagrams: bytes) -> None:
        """As the loop does: on_readable while the socket stays readable."""
        sock = self.paths.sockets["eth0"] = Batch(*datagrams)  # type: ignore[assignment]
        while sock.queue:
            self.paths.on_readable("eth0")

    @property
    def drops(self) -> dict:
        return {r.value: n for r, n in self.paths.counters.drops.items()}


def _raise(exc: BaseException):
    def callback(*_args):
        raise exc

    return callback


# -- each datagram on its own ----------------------------------------------------------------
def test_a_poison_probe_between_two_adverts_loses_neither_advert():
    unit = SimpleNamespace(cfg=CFG, is_partner=lambda s: s == PARTNER)
    doctor = DoctorAgent(unit)  # the real doctor: its decode once raised RecursionError
    r = Receiver(on_probe=doctor.on_probe)
    r.feed(advert(), POISON_PROBE, advert(bow_out=True))
    assert r.adverts == [False, True]
    assert doctor.counters["bad_probe"] == 1


@pytest.mark.parametrize("exc", [RecursionError("deep"), ValueError("bug"), KeyError("k")])
def test_an_exception_in_a_callback_is_an_internal_error_and_the_batch_goes_on(exc):
    r = Receiver(on_probe=_raise(exc))
    r.feed(advert(), POISON_PROBE, advert(bow_out=True), POISON_PROBE, advert())
    assert r.adverts == [False, True, False]
    assert r.drops == {"internal_error": 2}


def test_an_exception_while_judging_is_an_internal_error_and_the_batch_goes_on():
    r = Receiver()

    class Decoder:  # a decoder bug (classify trusts decoders to raise only DropError)
        def __getattr__(self, name):
            return getattr(PROFILE, name)

        def decode(self, pkt, addresses):
            if pkt.payload[-1:] == b"!":
                raise IndexError("decoder bug")
            return PROFILE.decode(pkt, addresses)

    r.paths.profile = Decoder()  # type: ignore[assignment]
    r.feed(advert(), datagram(advert()[20:] + b"!"), advert(bow_out=True))
    assert r.adverts == [False, True]
    assert r.drops == {"internal_error": 1}


def test_an_exception_in_on_advert_loses_only_that_advert():
    seen: list = []

    def on_advert(rank, bow_out, name):
        seen.append(bow_out)
        if len(seen) == 1:
            raise RuntimeError("election bug")

    r = Receiver(on_advert=on_advert)
    r.feed(advert(), advert(bow_out=True))
    assert seen == [False, True]
    assert r.drops == {"internal_error": 1}


def test_internal_errors_log_one_traceback_per_kind_every_10_s(caplog):
    r = Receiver(on_probe=_raise(RecursionError("deep")))
    with caplog.at_level(logging.DEBUG):
        for _ in range(5):
            r.feed(*[POISON_PROBE] * 200)
            r.clock.t += 1
    tracebacks = [rec for rec in caplog.records if rec.exc_info]
    assert len(tracebacks) == 1
    assert all(rec.levelno <= logging.DEBUG for rec in caplog.records if not rec.exc_info)
    assert r.drops == {"internal_error": 1000}
    r.clock.t += 10
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        r.feed(POISON_PROBE, POISON_PROBE)
    tracebacks = [rec for rec in caplog.records if rec.exc_info]
    assert len(tracebacks) == 1 and "999" in tracebacks[0].getMessage()  # the suppressed ones


def test_a_failing_socket_read_is_counted_not_raised():
    r = Receiver()
    r.paths.sockets["eth0"] = SimpleNamespace(recv_all=_raise(OSError("gone")))  # type: ignore[assignment]
    r.paths.on_readable("eth0")
    assert r.drops == {"internal_error": 1}


# -- what strangers may cost -----------------------------------------------------------------
def test_a_stranger_is_rate_limited_per_source_and_the_partner_never():
    r = Receiver()
    flood = [advert(src=STRANGER)] * 1000  # speaks our VHID: each judged one is noted
    r.feed(*flood[:500], *[advert() for _ in range(300)], *flood[500:])
    assert len(r.adverts) == 300  # every partner advert
    assert len(r.foreign) == 100 and r.strangers == []  # the burst noted, none elected
    assert r.drops == {"rate_limited": 900, "not_partner": 100}
    r.clock.t += 1.0
    r.feed(*flood)
    assert len(r.foreign) == 150  # 50 a second


def test_forged_sources_are_bounded_together_and_the_table_stays_small():
    r = Receiver()
    forged = [advert(src=IPv4Address(0x0A000000 + n)) for n in range(3000)]
    r.feed(*forged[:1500], *[advert() for _ in range(10)], *forged[1500:])
    assert len(r.adverts) == 10 and r.strangers == []
    assert r.drops == {"rate_limited": 2000, "not_partner": 1000}  # the shared burst: 1000
    assert len(r.paths._strangers) <= 256


def test_the_partner_is_never_rate_limited():
    r = Receiver()
    r.feed(*[advert() for _ in range(5000)])
    assert len(r.adverts) == 5000 and "rate_limited" not in r.drops


def test_the_doctors_table_of_foreign_speakers_is_bounded():
    doctor = DoctorAgent(SimpleNamespace(cfg=CFG, is_partner=lambda s: s == PARTNER))
    payload = advert(src=STRANGER)[20:]
    for n in range(1000):
        doctor.note_foreign("eth0", IPv4Address(0x0A000000 + n), payload)
    assert len(doctor.foreign) == 64
    assert doctor.counters["foreign_evicted"] == 1000 - 64
    newest = ("eth0", str(IPv4Address(0x0A000000 + 999)))
    assert newest in doctor.foreign and ("eth0", "10.0.0.0") not in doctor.foreign
    doctor.note_foreign("eth0", IPv4Address(0x0A000000 + 999), payload)  # known: nothing evicted
    assert doctor.counters["foreign_evicted"] == 1000 - 64
    assert doctor.foreign[newest]["count"] == 2


def test_a_strangers_probe_is_not_decoded():
    doctor = DoctorAgent(SimpleNamespace(cfg=CFG, is_partner=lambda s: s == PARTNER))
    doctor.on_probe("eth0", STRANGER, probe.MAGIC + b"[" * 1150)
    assert doctor.counters == {"probe_from_stranger": 1}


def test_a_probe_of_an_unknown_kind_does_not_grow_the_counters():
    doctor = DoctorAgent(SimpleNamespace(cfg=CFG, is_partner=lambda s: s == PARTNER))
    key = probe.probe_key(CFG.secret)
    for n in range(200):  # the source is easy to forge and the HMAC is checked later
        doctor.on_probe("eth0", PARTNER, probe.encode(key, {"k": f"kind{n}", "id": "x"}))
    doctor.on_probe("eth0", PARTNER, probe.encode(key, {"k": {"a": [1]}, "id": "x"}))
    assert doctor.counters == {"bad_probe": 201}


def test_token_buckets_refill_at_their_rate_and_a_noisy_key_spares_the_shared_bucket():
    clock = Clock()
    b = TokenBuckets(2, 4, total_rate=10, total_burst=6, max_keys=3, clock=clock)
    assert [b.allow("a") for _ in range(6)] == [True] * 4 + [False] * 2
    # the shared 6 are spent: b's third is refused, and b's own token given back
    assert [b.allow("b") for _ in range(3)] == [True, True, False]
    clock.t += 0.5  # +1 for each key (a: 1, b: 3), +5 shared
    assert [b.allow("a"), b.allow("a"), b.allow("b"), b.allow("b")] == [True, False, True, True]
    for key in "cdef":
        b.allow(key)
    assert len(b) == 3


def test_rate_limited_log_counts_per_kind(caplog):
    clock = Clock()
    rl = RateLimitedLog(logging.getLogger("test.limits"), 10, clock=clock)
    with caplog.at_level(logging.INFO, logger="test.limits"):
        assert rl.warning("a", "first a") and rl.warning("b", "first b")
        assert not rl.warning("a", "again")
        clock.t += 10
        assert rl.warning("a", "later a")
    assert [r.getMessage() for r in caplog.records] == [
        "first a",
        "first b",
        "later a (and 1 more like it in 10 s, not logged)",
    ]


# -- the carpool advert: replays, the older form of a rolling upgrade ---------------------------
def test_a_replayed_advert_is_dropped_and_counted():
    r = Receiver()
    first, bow_out = advert(), advert(bow_out=True)
    r.feed(first, bow_out, first, bow_out)  # the finding: a captured advert re-sent
    assert r.adverts == [False, True]
    assert r.drops == {"replayed": 2}


def legacy(bow_out: bool = False) -> bytes:
    payload = PROFILE.base.encode(bow_out, 0, 5, SHARED, PARTNER, GROUP)
    return datagram(payload)


def test_an_older_partner_is_heard_and_answered_in_its_form_until_it_speaks_ours():
    r = Receiver()
    assert r.paths.auth_status()["sending"] == ["carpool"]
    r.feed(legacy())  # the partner still runs the release before this one
    assert r.adverts == [False] and r.paths.partner_form == "carp"
    assert r.paths.auth_status()["sending"] == ["carpool", "carp"]
    r.feed(advert())  # upgraded: from now on its older form is a downgrade (or a replay)
    assert r.paths.auth_status()["sending"] == ["carpool"]
    r.feed(legacy(bow_out=True))
    assert r.adverts == [False, False] and r.drops == {"downgrade": 1}
    assert r.paths.auth_status()["downgrades"] == 1


def test_a_partner_whose_sync_speaks_this_release_is_no_longer_answered_in_the_older_form():
    # a standby sends no adverts: the master learns of its upgrade from the sync handshake
    r = Receiver()
    r.feed(legacy())
    assert r.paths.auth_status()["sending"] == ["carpool", "carp"]
    r.paths.partner_upgraded()
    assert r.paths.auth_status()["sending"] == ["carpool"]


# -- one advert round, every path --------------------------------------------------------------
OWN1, PARTNER1 = IPv4Address("198.18.1.11"), IPv4Address("198.18.1.12")
CFG2 = config(ETH0, {"name": "eth1", "first": str(OWN1), "second": str(PARTNER1)})


def test_a_round_heard_on_every_path_reaches_the_election_once_and_keeps_each_path_alive():
    # The partner sends each round (one counter) on every path: the election needs it once,
    # each path's liveness every time (a fast profile reads 50 rounds a second on 3 paths)
    heard, again, clock = [], [], Clock()
    paths = AdvertPaths(
        CFG2,
        {},
        on_advert=lambda rank, bow_out, name: heard.append((name, bow_out)),
        on_probe=lambda *a: None,
        on_foreign=lambda *a: None,
        on_again=again.append,
        clock=clock,
    )

    def round_on(names: list[str], bow_out: bool = False) -> None:
        counter = next(COUNTER)
        sources = {"eth0": PARTNER, "eth1": PARTNER1}
        for name in names:
            carried = [IPv4Address("198.18.0.10")]  # eth1 carries the pair's (it has none)
            payload = PROFILE.encode(bow_out, 0, counter, carried, sources[name], GROUP)
            paths.sockets[name] = Batch(datagram(payload, sources[name]))  # type: ignore
            clock.t += 0.001
            paths.on_readable(name)

    round_on(["eth0", "eth1"])
    assert heard == [("eth0", False)] and again == ["eth1"]
    assert paths.paths["eth0"].last_advert == 1000.001
    assert paths.paths["eth1"].last_advert == 1000.002
    round_on(["eth1", "eth0"], bow_out=True)  # whichever path is read first carries it
    assert heard == [("eth0", False), ("eth1", True)] and again == ["eth1", "eth0"]
    assert paths.counters.received == 4 and paths.counters.again == 2
    assert paths.paths["eth1"].adverts_heard == paths.paths["eth0"].adverts_heard == 2
    assert not paths.counters.drops


def test_a_relayed_round_is_news_only_when_no_path_brought_it_or_a_newer_one():
    # A relay connection (6973) holds back what it could not deliver while a path was down,
    # and hands it over after the heal: a chaos campaign saw a relayed demote from during a
    # split arrive 0.4 s after it healed and make the healthier unit take over for one advert,
    # its gratuitous ARP leaving the clients dark for 8 s. The relayed round's counter is the
    # one its adverts carried on the paths.
    rx = Receiver()
    rx.feed(advert())
    newest = rx.paths.newest
    assert rx.paths.relayed(newest - 1) == "stale"  # sent before the round a path brought
    assert rx.paths.relayed(newest) == "again"  # the round a path brought
    assert rx.paths.relayed(newest + 1) == "news"
    assert rx.paths.newest == newest + 1  # the path's copy of that round is now "again"
    assert rx.paths.relayed(None) == "unknown"  # an older release relays no counter
    counter = rx.paths.newest + 1
    assert rx.paths.relayed(counter) == "news"
    rx.feed(datagram(PROFILE.encode(False, 0, counter, SHARED, PARTNER, GROUP)))
    assert rx.adverts == [False] and rx.paths.counters.again == 1


def test_a_unit_that_sent_an_advert_round_knows_its_counter():
    paths = Receiver().paths
    assert paths.last_counter is None  # nothing sent: nothing to relay with a counter
    paths.sockets["eth0"] = SimpleNamespace(send=lambda payload, dst: True)  # type: ignore
    paths.send(False, 0)
    first = paths.last_counter
    paths.send(False, 0)
    assert first is not None and paths.last_counter == first + 1


def test_only_a_carpool_counter_is_relayed_and_a_new_form_starts_the_order_anew():
    # During a change of ha.auth one unit may relay while still on the other form: a CARP
    # counter (random, ~2^62) taken for a carpool one would leave every later carpool advert
    # "stale" (a reviewer's finding)
    carp = parse_config(
        {
            "unit": {"role": "first", "secret": "unit-test-secret"},
            "ha": {"auth": "carp"},
            "interface": [ETH0],
        }
    )
    rx = Receiver()
    rx.paths.sockets["eth0"] = SimpleNamespace(send=lambda payload, dst: True)  # type: ignore
    rx.paths.configure(carp)
    rx.paths.send(False, 0)
    assert rx.paths.last_counter is None
    rx.paths.configure(CFG)
    rx.feed(advert())
    assert rx.paths.newest > 0 and rx.adverts == [False]
    rx.paths.configure(carp)
    assert rx.paths.newest == -1  # the sealed order ended with the form
