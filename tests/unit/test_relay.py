"""Adverts relayed over 6973: when to ask for them, and what a relayed advert may say."""

import pytest

from carpool.node.fence import fence_timeout, install_commands, refresh_commands
from carpool.node.relay import RELAY_SLACK, WANT_AFTER, later_check, parse_advert, wants_relay
from carpool.node.watchdog import watchdog_timeout


def test_a_unit_asks_for_relays_only_after_silence_on_every_path():
    assert wants_relay([None, None], 10.0, 1.0)  # never heard on any path
    assert not wants_relay([9.0, None, 3.0], 10.0, 1.0)  # one path is enough
    assert not wants_relay([10.0 - WANT_AFTER], 10.0, 1.0)  # exactly at the limit
    assert wants_relay([10.0 - WANT_AFTER - 0.01, 2.0], 10.0, 1.0)


def test_asking_leaves_time_for_the_relay_before_master_down():
    # checked every half interval, answered at once: the relay lands before 3 intervals
    assert WANT_AFTER + 0.5 < 3.0


@pytest.mark.parametrize(
    "msg, field",
    [
        ({"demote": -1, "preference": 256, "bow_out": False}, "demote"),
        ({"demote": 256, "preference": 256, "bow_out": False}, "demote"),
        ({"demote": True, "preference": 256, "bow_out": False}, "demote"),
        ({"demote": 0, "preference": "256", "bow_out": False}, "preference"),
        ({"demote": 0, "preference": 70000, "bow_out": False}, "preference"),
        ({"demote": 0, "preference": 256, "bow_out": 1}, "bow_out"),
        ({"demote": 0, "preference": 256}, "bow_out"),
        ({"demote": 0, "preference": 256, "bow_out": False, "counter": -1}, "counter"),
        ({"demote": 0, "preference": 256, "bow_out": False, "counter": 2**64}, "counter"),
        ({"demote": 0, "preference": 256, "bow_out": False, "counter": "7"}, "counter"),
        ({"demote": 0, "preference": 256, "bow_out": False, "counter": True}, "counter"),
    ],
)
def test_a_relayed_advert_with_a_bad_field_is_refused_naming_it(msg, field):
    with pytest.raises(ValueError, match=field):
        parse_advert(msg)


def test_a_relayed_advert():
    assert parse_advert({"demote": 2, "preference": 256, "bow_out": True}) == (2, 256, True, None)
    # the round's counter (the one its adverts carried): an older release sends none
    msg = {"demote": 0, "preference": 1, "bow_out": False, "counter": 2**64 - 1}
    assert parse_advert(msg) == (0, 1, False, 2**64 - 1)


def test_fence_timeout_stays_within_two_adverts_and_100_ms_in_fast_profiles():
    assert fence_timeout(1.0) == 1.75  # default: < 2 s, > 1 late advert
    assert fence_timeout(0.02) == pytest.approx(0.08)  # fast 20 ms: 80 ms (< 100 ms)
    assert fence_timeout(0.01) == pytest.approx(0.04)  # never past two... four adverts
    for interval in (0.02, 0.05, 1.0, 2.0):
        assert fence_timeout(interval) > interval


def test_fence_commands():
    from ipaddress import IPv4Address as A
    from ipaddress import IPv6Address as A6

    text = install_commands([A("198.18.2.1"), A6("2001:2::10"), A("198.18.0.10")])
    assert "elements = { 198.18.0.10, 198.18.2.1 }" in text
    assert "type ipv6_addr ; elements = { 2001:2::10 }" in text
    assert text.count("delete table") == 3 and "arp daddr ip != @live" in text
    assert "ip6 saddr @shared ip6 saddr != @live" in text  # the kernel's NAs for them too
    refresh = refresh_commands([A6("2001:2::10"), A("198.18.0.10")], 0.08)
    assert refresh.splitlines() == [
        "flush set ip carpool_fence live",
        "add element ip carpool_fence live { 198.18.0.10 timeout 80ms }",
        "flush set ip6 carpool_fence live",
        "add element ip6 carpool_fence live { 2001:2::10 timeout 80ms }",
        "flush set arp carpool_fence live",
        "add element arp carpool_fence live { 198.18.0.10 timeout 80ms }",
    ]
    assert "add element" not in refresh_commands([], 1.0)


def test_watchdog_timeout():
    assert watchdog_timeout(3.0, 1.0, -1) == 5.0  # master-down + two adverts
    assert watchdog_timeout(6.0, 2.0, -1) == 10.0
    assert watchdog_timeout(0.07, 0.02, -1) == 5.0  # at least 5 s
    assert watchdog_timeout(3.0, 1.0, 0) == 0  # off
    assert watchdog_timeout(3.0, 1.0, 9.5) == 9.5


def test_watch_kills_only_after_a_first_beat_and_then_silence():
    import os
    import threading
    import time

    from carpool.node.watchdog import watch

    r, w = os.pipe()
    try:
        done = threading.Event()
        # no beat yet: a slow start is never a hang; the worker exits -> None
        threading.Timer(0.3, done.set).start()
        assert watch(r, 0.1, done.is_set) is None
        for _ in range(3):  # beats, then silence: killed after ~the timeout
            os.write(w, b".")
        started = time.monotonic()
        why = watch(r, 0.2, lambda: time.monotonic() - started > 5)
        assert why and "watchdog 0.2 s" in why and time.monotonic() - started < 1.0
    finally:
        os.close(r)
        os.close(w)


def test_watch_gives_a_fresh_timeout_after_the_supervisor_itself_was_stopped():
    import os

    from carpool.node.watchdog import watch

    r, w = os.pipe()
    clock = {"t": 0.0, "polls": 0, "arm": 0}

    def now():
        if clock["arm"]:
            clock["arm"] -= 1
            if not clock["arm"]:
                clock["t"] += 8.0  # read after the poll: stopped for 8 s inside it
        return clock["t"]

    def exited():
        clock["polls"] += 1
        if clock["polls"] == 2:
            clock["arm"] = 2  # the whole unit is SIGSTOPped during the next poll
        return clock["polls"] > 6

    try:
        os.write(w, b".")  # one beat: the watch is armed
        assert watch(r, 5.0, exited, now=now) is None  # not blamed on the worker
    finally:
        os.close(r)
        os.close(w)


def _blocks_the_loop(seconds: float) -> None:
    import time

    time.sleep(seconds)


def test_pulse_reports_a_blocked_loop_with_its_stack(caplog):
    import asyncio

    from carpool.node.watchdog import Pulse

    async def main():
        loop = asyncio.get_running_loop()
        pulse = Pulse(None, 1.0, lag_report=0.1)
        pulse.start(loop)
        await asyncio.sleep(0.1)
        loop.call_soon(_blocks_the_loop, 0.4)
        for _ in range(40):  # bounded: the next turn reports it
            await asyncio.sleep(0.025)
            if pulse.lags:
                break
        pulse.stop()
        return pulse

    pulse = asyncio.run(main())
    assert pulse.lags >= 1 and pulse.lag_max >= 0.3  # (a busy machine may add its own)
    assert pulse.status()["lags"] == pulse.lags
    stacks = [r.getMessage() for r in caplog.records if "has not turned" in r.getMessage()]
    assert stacks and "_blocks_the_loop" in stacks[0]  # logged while blocked, naming it
    assert "the event loop was blocked for" in caplog.text


def test_pulse_quiet_loop_reports_nothing(caplog):
    import asyncio

    from carpool.node.watchdog import Pulse

    async def main():
        pulse = Pulse(None, 1.0, lag_report=2.0)  # far above any scheduling hiccup
        pulse.start(asyncio.get_running_loop())
        await asyncio.sleep(0.3)
        pulse.stop()
        return pulse

    assert asyncio.run(main()).lags == 0
    assert "event loop" not in caplog.text


def test_watch_wakes_when_the_worker_ends_not_on_a_timer():
    """With the worker's pidfd the supervisor sleeps up to a second between looks, yet learns
    of the worker's end at once (a killed worker's addresses are withdrawn without delay)."""
    import os
    import subprocess
    import threading
    import time

    from carpool.node.watchdog import watch

    r, w = os.pipe()
    worker = subprocess.Popen(["sleep", "30"])
    ended = os.pidfd_open(worker.pid)
    try:
        os.write(w, b".")  # armed: a beat came
        threading.Timer(0.2, worker.kill).start()
        started = time.monotonic()
        assert watch(r, 5.0, lambda: worker.poll() is not None, ended_fd=ended) is None
        took = time.monotonic() - started
        assert 0.15 < took < 0.6, took  # a 1 s step would have taken ~1 s
    finally:
        worker.kill()
        worker.wait()
        os.close(ended)
        os.close(r)
        os.close(w)


def test_each_advert_round_pushes_the_relay_check_back_once():
    # set at the advert of t=10 for 11.26; the next round at t=11 moves it to 12.26
    first = 10.0 + WANT_AFTER + RELAY_SLACK
    assert later_check(first, 11.0, 1.0) == 11.0 + WANT_AFTER + RELAY_SLACK
    # the round's other paths, a moment later, leave it where it is (no new timer each)
    assert later_check(11.0 + WANT_AFTER + RELAY_SLACK, 11.001, 1.0) is None
    # the fast profile: 20 ms adverts
    assert later_check(first, 10.02, 0.02) is None  # (a check already far ahead stays)
    assert later_check(10.0 + 0.025 + RELAY_SLACK, 10.02, 0.02) == 10.02 + 0.025 + RELAY_SLACK


def test_without_a_connection_relays_wanted_are_tried_for_at_once_not_after_retry():
    """The relay connection lost (a link down for a while): it is tried again every RETRY s,
    but as soon as no path carries adverts (relays wanted) within HURRY, and then every
    HURRY while they are: a link back from a fault must not leave two active units until the
    next RETRY (a chaos campaign found 0.94 s of two holders)."""
    import asyncio
    import errno

    from carpool.node.relay import HURRY, RETRY, AdvertRelay

    class Unreachable:
        relay = None

        def __init__(self):
            self.attempts: list[float] = []

        async def _connect(self):
            self.attempts.append(asyncio.get_running_loop().time())
            raise OSError(errno.ENETUNREACH, "Network is unreachable")

    async def main():
        loop = asyncio.get_running_loop()
        sync = Unreachable()
        relay = AdvertRelay(sync, lambda *a: None, lambda: "backup", lambda: None)
        task = asyncio.create_task(relay.run())
        await asyncio.sleep(0.3)  # one attempt, then waiting out RETRY
        asked = loop.time()
        relay.ask(True)
        await asyncio.sleep(0.5)
        relay.ask(False)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return sync.attempts, asked, dict(relay.counters)

    attempts, asked, counters = asyncio.run(main())
    assert attempts[0] < asked and not [t for t in attempts if attempts[0] < t < asked]
    after = [t - asked for t in attempts if t > asked]
    assert after and HURRY <= after[0] < HURRY + 0.1 < RETRY, after  # not RETRY s later
    assert 3 <= len(after) <= 6, after  # then every HURRY while wanted
    assert counters["hurried"] == 1 and counters["disconnects"] == len(attempts), counters
