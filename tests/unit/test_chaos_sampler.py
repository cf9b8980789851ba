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
