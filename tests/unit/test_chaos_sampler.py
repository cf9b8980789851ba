"""The chaos sampler's pieces that need no lab: its rtnetlink dump (of this namespace) and the
held intervals built from its change lines."""

from __future__ import annotations

from carpool.lab.sampler import Rtnl, held_intervals


def test_rtnetlink_dump_sees_loopback():
    rtnl = Rtnl()
    addrs = rtnl.addresses()
    assert "127.0.0.1" in addrs
    assert addrs["127.0.0.1"] in rtnl.carriers()  # lo is up with carrier


def test_held_intervals_from_change_lines():
    lines = [
        {"ev": "start", "t": 0.0},
        {"ev": "held", "t": 1.0, "unit": "a", "addr": "x", "held": True},
        {"ev": "held", "t": 1.5, "unit": "a", "addr": "x", "held": True},  # fence change
        {"ev": "held", "t": 2.0, "unit": "a", "addr": "x", "held": False},
        {"ev": "held", "t": 3.0, "unit": "b", "addr": "x", "held": True},
        {"ev": "tick", "t": 3.5},
    ]
    assert held_intervals(lines, 9.0) == {("a", "x"): [(1.0, 2.0)], ("b", "x"): [(3.0, 9.0)]}


def test_a_sampler_gap_widens_what_may_have_been_held_not_what_surely_was():
    # the sampler saw x held at 1.0, then (starved for 0.12 s) not held at 2.13; the sample
    # before that was at 2.01: x was surely held over [1.0, 2.01] and maybe over (0.99, 2.13]
    lines = [
        {"ev": "held", "t": 1.0, "prev": 0.99, "unit": "a", "addr": "x", "held": True},
        {"ev": "held", "t": 2.13, "prev": 2.01, "unit": "a", "addr": "x", "held": False},
        {"ev": "held", "t": 3.0, "prev": 2.5, "unit": "b", "addr": "x", "held": True},
    ]
    assert held_intervals(lines, 9.0, surely=True) == {
        ("a", "x"): [(1.0, 2.01)],
        ("b", "x"): [(3.0, 9.0)],
    }
    assert held_intervals(lines, 9.0) == {("a", "x"): [(0.99, 2.13)], ("b", "x"): [(2.5, 9.0)]}
    # lines of an older sampler (no "prev"): both views are the sample times
    old = [{k: v for k, v in line.items() if k != "prev"} for line in lines]
    assert held_intervals(old, 9.0, surely=True) == held_intervals(old, 9.0)
