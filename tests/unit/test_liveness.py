"""The fast partner detector (pure): its frames, and its verdicts — a dead partner is gone as
soon as the heartbeat link falls silent or loses carrier and no other path answers; a cut
cable (an answer elsewhere) moves nothing; with no other path it leaves it to the adverts."""

from __future__ import annotations

import itertools
from ipaddress import IPv4Address

import pytest

from carpool.ha import election as el
from carpool.ha.drops import DropError, DropReason
from carpool.ha.liveness import (
    QUERY_TIMEOUT,
    Detector,
    Frame,
    Gone,
    Kind,
    SendHello,
    SendQuery,
    State,
    decode,
    encode,
    liveness_key,
)

KEY = liveness_key(b"partner-secret-1")
PATHS = ("eth0", "eth2")


def nonces():
    counter = itertools.count(1)
    return lambda: next(counter).to_bytes(8, "big")


def standby(interval=0.1, multiplier=3) -> Detector:
    d = Detector(interval, multiplier, nonces())
    d.active(False, 0.0)
    return d


def test_frames_round_trip_and_every_bad_one_is_a_typed_drop():
    frame = Frame(Kind.QUERY, session=7, seq=9, nonce=b"12345678")
    data = encode(KEY, frame)
    assert len(data) == 40 and decode(KEY, data) == frame
    cases = {
        DropReason.BAD_LENGTH: data[:-1],
        DropReason.BAD_VERSION: b"XXXX" + data[4:],
        DropReason.BAD_HMAC: data[:10] + bytes([data[10] ^ 1]) + data[11:],
    }
    for reason, bad in cases.items():
        with pytest.raises(DropError) as e:
            decode(KEY, bad)
        assert e.value.reason is reason
    with pytest.raises(DropError) as e:
        decode(liveness_key(b"another-secret-1"), data)
    assert e.value.reason is DropReason.BAD_HMAC
    with pytest.raises(DropError) as e:  # a kind no version knows, properly sealed
        import hashlib
        import hmac

        body = data[:4] + b"\x09" + data[5:24]
        decode(KEY, body + hmac.new(KEY, body, hashlib.sha256).digest()[:16])
    assert e.value.reason is DropReason.BAD_TYPE


def test_the_active_unit_sends_a_hello_each_interval_and_judges_nobody():
    d = Detector(0.1, 3, nonces())
    d.active(True, 10.0)
    assert d.tick(10.0, PATHS) == [SendHello(1)]
    assert d.deadline() == pytest.approx(10.1)
    assert d.tick(10.05, PATHS) == []
    assert d.tick(10.1, PATHS) == [SendHello(2)]
    assert d.tick(99.0, PATHS) == [SendHello(3)]  # late: one hello, not a burst of them
    assert d.state is State.WAITING and d.carrier_lost(99.0, PATHS) == []


def test_nothing_is_judged_before_the_first_sign_of_life():
    d = standby()
    assert d.deadline() is None and d.tick(100.0, PATHS) == []
    assert d.carrier_lost(100.0, PATHS) == [] and d.state is State.WAITING


def test_a_partner_that_sends_no_hellos_is_left_to_the_advert_timer():
    """Its adverts alone never start the judging: a partner without the detector (an older
    version, mid-upgrade) or whose hello thread died would be judged gone 0.3 s after each
    advert, taken over from, and win back at its next advert: a failover every second."""
    d = standby()
    for t in (1.0, 2.0, 3.0):
        d.heard(t, hello=False)
        assert d.state is State.WAITING and d.deadline() is None
        assert d.tick(t + 0.5, PATHS) == [] and d.carrier_lost(t + 0.5, PATHS) == []
    d.heard(3.9)  # a hello: judged from now on, and adverts count as signs of life
    assert d.state is State.ALIVE
    d.heard(4.1, hello=False)
    assert d.deadline() == pytest.approx(4.4)
    d.active(True, 5.0)
    d.active(False, 6.0)  # a new role: a hello again before an advert counts
    d.heard(6.5, hello=False)
    assert d.state is State.WAITING


def test_silence_on_the_heartbeat_asks_every_other_path_and_no_answer_is_gone():
    d = standby()
    d.heard(1.0)
    assert d.state is State.ALIVE and d.deadline() == pytest.approx(1.3)
    assert d.tick(1.29, PATHS) == []
    queries = d.tick(1.3, PATHS)
    assert queries == [
        SendQuery("eth0", (1).to_bytes(8, "big")),
        SendQuery("eth2", (2).to_bytes(8, "big")),
    ]
    assert d.state is State.ASKING and d.deadline() == pytest.approx(1.3 + QUERY_TIMEOUT)
    d.heard(1.31)  # a late hello does not settle the question: only an answer does
    (gone,) = d.tick(1.3 + QUERY_TIMEOUT, PATHS)
    assert isinstance(gone, Gone) and d.state is State.GONE
    assert "eth0, eth2" in gone.reason and "nothing heard on the heartbeat link" in gone.reason
    assert d.tick(5.0, PATHS) == []  # said once
    d.heard(6.0)  # the partner is back
    assert d.state is State.ALIVE


def test_an_answer_on_another_path_means_the_cable_was_cut_and_nothing_moves():
    d = standby()
    d.heard(1.0)
    first, _second = d.carrier_lost(1.05, PATHS)
    assert "lost its carrier" in d.reason
    d.answer(Frame(Kind.ANSWER, 1, 0, first.nonce), 1.051)
    assert d.state is State.CUT and "answers on eth0" in d.reason
    assert d.tick(1.05 + QUERY_TIMEOUT, PATHS) == [] and d.counters["cut"] == 1
    assert d.tick(60.0, PATHS) == []  # cut stays cut until the partner is heard again
    d.heard(61.0)
    assert d.state is State.ALIVE


def test_a_stale_or_unknown_answer_settles_nothing():
    d = standby()
    d.heard(1.0)
    d.tick(1.3, PATHS)
    d.answer(Frame(Kind.ANSWER, 1, 0, b"\xff" * 8), 1.301)  # a nonce never asked
    assert d.state is State.ASKING
    assert isinstance(d.tick(1.3 + QUERY_TIMEOUT, PATHS)[0], Gone)
    d.answer(Frame(Kind.ANSWER, 1, 0, (1).to_bytes(8, "big")), 1.4)  # too late
    assert d.state is State.GONE


def test_with_no_other_path_up_a_silent_heartbeat_is_left_to_the_advert_timer():
    d = standby()
    d.heard(1.0)
    assert d.tick(1.3, ()) == [] and d.state is State.BLIND
    assert "no other path" in d.reason and d.counters["blind"] == 1


def test_a_replayed_hello_is_not_a_sign_of_life():
    d = standby()
    d.hello(Frame(Kind.HELLO, 5, 10), 1.0)
    d.hello(Frame(Kind.HELLO, 5, 10), 1.25)  # replayed: does not re-arm the silence limit
    assert d.counters == d.counters | {"hellos": 1, "replayed": 1}
    assert isinstance(d.tick(1.3, PATHS)[0], SendQuery)
    d.hello(Frame(Kind.HELLO, 6, 1), 1.31)  # a restarted partner: a new session
    assert d.counters["hellos"] == 2


def test_a_change_of_role_starts_the_judging_afresh():
    d = standby()
    d.heard(1.0)
    d.active(True, 1.1)
    d.active(False, 5.0)  # a standby again: the old silence does not count
    assert d.state is State.WAITING and d.tick(5.0, PATHS) == []


def test_the_election_takes_over_at_once_on_gone_only_as_a_backup():
    params = el.Params(rank_preference=256, address=1, advert_interval=1.0, master_down=3.0)
    e = el.Election(params)
    e.handle(el.Start(), 0.0)
    e.handle(el.AdvertReceived(el.Rank(0, 256, 2)), 0.5)
    effects = e.handle(el.PartnerGone("no answer on eth0"), 0.6)
    assert e.state is el.State.MASTER and el.TakeAddresses() in effects
    assert e.reason == "partner gone: no answer on eth0"
    assert e.handle(el.PartnerGone("again"), 0.7) == [] and e.state is el.State.MASTER
    stopped = el.Election(params)
    assert stopped.handle(el.PartnerGone("x"), 0.0) == [] and stopped.state is el.State.INIT


def test_a_fast_profile_waits_for_answers_as_long_as_it_asks():
    d = Detector(0.1, 3, nonces(), query_timeout=0.01)
    d.active(False, 0.0)
    d.heard(1.0)
    d.carrier_lost(1.0, PATHS)
    assert d.deadline() == pytest.approx(1.01)
    assert isinstance(d.tick(1.01, PATHS)[0], Gone) and "within 10 ms" in d.reason


def test_the_heart_answers_and_says_hello_while_the_event_loop_is_busy():
    """The hellos and the answers come from their own thread: a loop stalled in Python work
    (here the test's main thread, spinning) is not taken for a dead unit by the partner."""
    import socket
    import time

    from carpool.ha import liveness as lv
    from carpool.node.liveness import Heart

    ours = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    ours.bind(("127.0.0.1", 0))
    ours.setblocking(False)
    partner = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    partner.bind(("127.0.0.2", lv.PORT))  # where the heart sends: the partner's port
    partner.settimeout(2.0)
    delivered = []
    heart = Heart(
        [ours],
        KEY,
        session=1,
        interval=0.02,
        hello_to=IPv4Address("127.0.0.2"),
        partner_at={"127.0.0.2": "eth1"},
        deliver=lambda frame, path: delivered.append((frame.kind, path)),
    )
    heart.start()
    try:
        query = encode(KEY, Frame(Kind.QUERY, 9, 0, b"nonce-01"))
        partner.sendto(query, ours.getsockname())
        heart.set_active(True)
        spin_until = time.monotonic() + 0.3
        while time.monotonic() < spin_until:  # the "event loop", busy in Python
            sum(range(1000))
        frames = [decode(KEY, partner.recv(64)) for _ in range(5)]
        kinds = [f.kind for f in frames]
        assert Kind.ANSWER in kinds and Kind.HELLO in kinds
        answer = next(f for f in frames if f.kind is Kind.ANSWER)
        assert answer.nonce == b"nonce-01"
        hellos = [f.seq for f in frames if f.kind is Kind.HELLO]
        assert hellos == sorted(hellos) and len(set(hellos)) == len(hellos)
        partner.sendto(encode(KEY, Frame(Kind.HELLO, 9, 1)), ours.getsockname())
        partner.sendto(b"garbage", ours.getsockname())
        deadline = time.monotonic() + 2
        while not (delivered and heart.drops["bad_length"]) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert delivered == [(Kind.HELLO, "eth1")]
        assert heart.drops["bad_length"] == 1
    finally:
        heart.stop()
        ours.close()
        partner.close()


def test_the_detector_is_off_and_says_why_when_it_cannot_run():
    """No heartbeat, no other checked link, liveness_ms 0, or UDP 6975 taken: the election
    runs on the advert timer and status says why (the daemon never fails to start for it)."""
    import asyncio
    import socket

    from carpool.config.ha import parse_config
    from carpool.ha import liveness as lv
    from carpool.node.liveness import Liveness, off_reason

    def cfg(interfaces, **ha):
        return parse_config(
            {
                "unit": {"role": "first", "secret": "unit-test-secret"},
                "interface": interfaces,
                "ha": ha,
            }
        )

    lan = {"name": "eth0", "first": "198.18.0.11", "second": "198.18.0.12"}
    cable = {"name": "eth1", "first": "198.18.1.1", "second": "198.18.1.2", "heartbeat": True}
    assert off_reason(cfg([lan])) == "no heartbeat link"
    assert off_reason(cfg([cable])) == "no other checked link to ask the partner on"
    assert off_reason(cfg([lan, cable], liveness_ms=0)) == "ha.liveness_ms = 0"

    async def switched_off():  # the documented "0 = off" once stopped the daemon's start
        live = Liveness(
            cfg([lan, cable], liveness_ms=0), lambda r: None, lambda n: True, lambda: 0.0
        )
        live.start(asyncio.get_running_loop())
        live.on_transition({"new": "backup"})
        live.heard_advert("eth1")
        return live

    off = asyncio.run(switched_off())
    assert off.heart is None and off.status(0.0)["on"] is False
    assert off.status(0.0)["off_reason"] == "ha.liveness_ms = 0"
    both = cfg([lan, cable])
    assert off_reason(both) == ""
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("0.0.0.0", lv.PORT))
    try:

        async def main():
            live = Liveness(both, lambda r: None, lambda n: True, lambda: 0.0)
            live.start(asyncio.get_running_loop())
            return live

        live = asyncio.run(main())
        assert live.off.startswith(f"cannot listen on UDP {lv.PORT}") and live.heart is None
        assert live.status(0.0)["on"] is False
    finally:
        taken.close()


def test_an_unset_detector_is_automatic_and_the_carrier_reads_ride_its_hellos():
    """ha.liveness_ms / liveness_multiplier unset (what a document stored by the release
    before means: it left its defaults out) run LIVENESS_AUTO; set, they run as written. The
    late links' carrier is read with each hello when hellos come more often than LINK_POLL,
    so the reads never wake the unit on their own."""
    import asyncio

    from carpool.config.document import LIVENESS_AUTO
    from carpool.config.ha import parse_config
    from carpool.node.daemon import LINK_POLL
    from carpool.node.liveness import Liveness, link_poll

    def cfg(**ha):
        lan = {"name": "eth0", "first": "198.18.0.11", "second": "198.18.0.12"}
        cable = {"name": "eth1", "first": "198.18.1.1", "second": "198.18.1.2", "heartbeat": True}
        return parse_config(
            {
                "unit": {"role": "first", "secret": "unit-test-secret"},
                "interface": [lan, cable],
                "ha": ha,
            }
        )

    auto, written, off = cfg(), cfg(liveness_ms=100, liveness_multiplier=3), cfg(liveness_ms=0)
    assert (auto.liveness_ms, auto.liveness_multiplier) == LIVENESS_AUTO == (250, 2)
    assert auto.document.ha.liveness_ms is None  # left out of the stored form and the hash
    assert (written.liveness_ms, written.liveness_multiplier) == (100, 3)
    # a verdict on a silent partner (no carrier help) within 0.15 of keepalived's 3.5 s
    assert LIVENESS_AUTO[0] * LIVENESS_AUTO[1] / 1000 + QUERY_TIMEOUT <= 0.15 * 3.5
    assert link_poll(written, LINK_POLL) == 0.1
    assert link_poll(auto, LINK_POLL) == LINK_POLL == 0.25
    assert link_poll(cfg(liveness_ms=1000), LINK_POLL) == LINK_POLL
    assert link_poll(off, LINK_POLL) == LINK_POLL
    # no Heart running (UDP 6975 taken): the loop's timer reads them, not every 100 ms
    assert link_poll(written, LINK_POLL, heart=False) == LINK_POLL

    async def statuses():
        out = []
        for c in (auto, written):
            live = Liveness(c, lambda r: None, lambda n: True, lambda: 0.0)
            out.append(live.status(0.0))
            live.close()
        return out

    shown_auto, shown_written = asyncio.run(statuses())
    assert shown_auto["automatic"] and shown_auto["interval_ms"] == 250
    assert not shown_written["automatic"] and shown_written["interval_ms"] == 100


def test_a_new_version_rebuilds_the_detector_only_when_its_settings_change():
    """The daemon builds a new Liveness for a version that changes what the running one was
    built from (interval, multiplier, the paths, the advert interval its waits follow), and
    not for an unrelated change. A closed one acts on nothing its Heart handed the loop
    before it stopped: a late silence must not become a verdict."""
    import asyncio

    from carpool.config.ha import parse_config
    from carpool.ha import liveness as lv
    from carpool.node.liveness import Liveness, settings

    def cfg(lan_check=True, **ha):
        lan = {"name": "eth0", "first": "198.18.0.11", "second": "198.18.0.12", "check": lan_check}
        cable = {"name": "eth1", "first": "198.18.1.1", "second": "198.18.1.2", "heartbeat": True}
        return parse_config(
            {
                "unit": {"role": "first", "secret": "unit-test-secret"},
                "interface": [lan, cable],
                "ha": ha,
            }
        )

    base = settings(cfg(), 1.0)
    assert settings(cfg(garp_count=5), 1.0) == base
    assert settings(cfg(liveness_ms=100), 1.0) != base
    assert settings(cfg(liveness_multiplier=3), 1.0) != base
    assert settings(cfg(), 0.02) != base  # ha.fast: answers are waited half an advert
    assert settings(cfg(lan_check=False), 1.0) != base  # no other path: off
    # written as the automatic values: the same detector, but status says "automatic" no more
    assert settings(cfg(liveness_ms=250, liveness_multiplier=2), 1.0) != base
    gone: list[str] = []

    async def closed_then_told():
        live = Liveness(cfg(), gone.append, lambda n: True, lambda: 100.0)
        live.start(asyncio.get_running_loop())
        assert live.heart is not None, live.off  # (UDP 6975 free: the detector runs)
        live.set_active(False)
        live.detector.heard(1.0)  # a partner heard long ago: a tick now would ask
        before = (dict(live.detector.counters), live.detector.state, live.detector.last_heard)
        live.close()
        live._tick()  # what the Heart queued before it stopped
        live._delivered(lv.Frame(lv.Kind.HELLO, 7, 1, bytes(8)), "eth1")
        live.heard_advert("eth1")
        return before, (dict(live.detector.counters), live.detector.state, live.detector.last_heard)

    before, after = asyncio.run(closed_then_told())
    assert gone == [] and after == before, after
