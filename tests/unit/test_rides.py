import asyncio

from carpool.node.rides import EARLY, Ride, Rides, Schedule
from carpool.node.watchdog import Pulse


def test_a_ride_runs_at_the_first_turn_then_once_per_every():
    schedule = Schedule()
    ride = Ride("echo", every=1.0, slack=0.5, fn=lambda: None)
    schedule.add(ride, now=10.0)
    assert schedule.deadline() == 10.5  # nothing turns: the backstop runs it slack s from now
    assert schedule.take(10.2) == [ride]
    assert schedule.take(10.9) == []  # too soon
    assert schedule.deadline() == 10.2 + 1.5
    # an advert interval of exactly `every` (advskew 0, a little early by the clock) carries it
    assert schedule.take(10.2 + EARLY + 0.01) == [ride]


def test_rides_are_taken_apart_each_on_its_own_period():
    schedule = Schedule()
    fast, slow = (Ride(n, e, 0.5, lambda: None) for n, e in (("fast", 0.5), ("slow", 2.0)))
    schedule.add(fast, 0.0)
    schedule.add(slow, 0.0)
    turns = [schedule.take(t / 10) for t in range(0, 41, 5)]  # a turn every 0.5 s, 0..4 s
    assert [len(r) for r in turns] == [2, 1, 1, 1, 2, 1, 1, 1, 2]
    assert schedule.deadline() == 4.0 + 1.0  # fast's: 0.5 + 0.5 after its last run


def _run_rides(turn_every: float | None, seconds: float) -> tuple[int, dict]:
    async def main():
        loop = asyncio.get_running_loop()
        rides = Rides(loop)
        runs: list[float] = []
        rides.add("work", 0.1, 0.1, lambda: runs.append(loop.time()))
        end = loop.time() + seconds
        while loop.time() < end:  # bounded by the clock
            await asyncio.sleep(turn_every or seconds)
            if turn_every:
                rides.turn()
        rides.close()
        return len(runs), rides.counters

    return asyncio.run(main())


def test_turns_carry_the_work_and_its_timer_never_fires():
    runs, counters = _run_rides(turn_every=0.05, seconds=0.6)
    assert counters["backstop"] == 0
    assert counters["ridden"] == runs >= 4  # every 0.1 s on turns 0.05 s apart


def test_without_turns_the_backstop_runs_it_every_plus_slack():
    runs, counters = _run_rides(turn_every=None, seconds=0.7)
    assert counters["ridden"] == 0
    assert counters["backstop"] == runs and 2 <= runs <= 5  # about every 0.2 s


def test_pulse_beats_on_the_turns_and_its_lag_thread_stays_quiet(caplog):
    async def main():
        loop = asyncio.get_running_loop()
        rides = Rides(loop)
        pulse = Pulse(None, 0.1, lag_report=0.1)
        pulse.start(loop, rides, slack=0.3)
        for _ in range(12):  # an advert turn every 0.1 s
            await asyncio.sleep(0.1)
            rides.turn()
        pulse.stop()
        rides.close()
        return pulse, rides

    pulse, rides = asyncio.run(main())
    assert rides.counters["backstop"] == 0 and rides.counters["ridden"] >= 6
    assert pulse.lags == 0
    assert "event loop" not in caplog.text
    assert rides.status()["rides"] == []  # the pulse left the rides it was given


def _timeslices(thread_name: str) -> int:
    import threading
    from pathlib import Path

    thread = next(t for t in threading.enumerate() if t.name == thread_name)
    return int(Path(f"/proc/self/task/{thread.native_id}/schedstat").read_text().split()[2])


def test_the_lag_thread_sleeps_until_a_stall_could_be_reported():
    """It used to look every lag_report s (0.1 here: 12 wake-ups in 1.2 s); it now sleeps
    until the last beat is step + slack + lag_report old, so beats push its wake-up back."""

    async def main():
        loop = asyncio.get_running_loop()
        rides = Rides(loop)
        pulse = Pulse(None, 0.1, lag_report=0.1)
        pulse.start(loop, rides, slack=0.3)  # a report 0.5 s after the last beat
        await asyncio.sleep(0.05)
        before = _timeslices("carpool-lag")
        for _ in range(12):  # 1.2 s, a beat every 0.1 s
            await asyncio.sleep(0.1)
            rides.turn()
        woke = _timeslices("carpool-lag") - before
        pulse.stop()
        rides.close()
        return woke, pulse

    woke, pulse = asyncio.run(main())
    assert woke <= 6 and pulse.lags == 0


def test_a_short_watchdog_bounds_how_long_the_pulse_waits_for_an_advert():
    """unit.watchdog = 1 s: the supervisor kills after 1 s of silence, so the beat may not wait
    the daemon's 1 s slack for an advert turn; it beats at least every 0.5 s without one."""
    import os
    import time

    async def main():
        loop = asyncio.get_running_loop()
        r, w = os.pipe()
        os.set_blocking(r, False)
        pulse = Pulse(w, 1.0 / 8)  # (Pulse.from_env: the timeout / 8)
        pulse.start(loop, Rides(loop), slack=1.0)
        beats: list[float] = []
        end = time.monotonic() + 1.3
        while time.monotonic() < end:  # no advert turn at all
            await asyncio.sleep(0.02)
            try:
                if os.read(r, 64):
                    beats.append(time.monotonic())
            except BlockingIOError:
                pass
        pulse.stop()
        os.close(r)
        return pulse, beats

    pulse, beats = asyncio.run(main())
    assert pulse.step + pulse.slack <= 0.5
    assert len(beats) >= 2
    assert max(b - a for a, b in zip(beats, beats[1:], strict=False)) < 0.7
