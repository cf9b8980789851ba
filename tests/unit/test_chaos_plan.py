"""The chaos campaign's plan (same seed, same faults) and its report (a self-contained page)."""

from __future__ import annotations

from carpool.lab.chaos import WEIGHTS, plan
from carpool.lab.chaos_report import render_html, summary_table
from carpool.lab.faults import FAULTS


def test_same_seed_same_plan_and_another_seed_another():
    assert plan(40, 7) == plan(40, 7)
    assert plan(40, 7) != plan(40, 8)
    assert plan(10, 7, fast=True) != plan(10, 7)  # hold times by profile


def test_plan_draws_every_kind_with_valid_arguments():
    steps = plan(400, 1, vmac=True)
    assert {s["kind"] for s in steps} == set(WEIGHTS)
    assert all(s["kind"] in FAULTS for s in steps)
    assert "block-vmac" not in {s["kind"] for s in plan(400, 1)}
    assert not steps[-1]["combine"]
    for s in steps:
        assert 1.0 <= s["hold"] <= 6.0
        if s["kind"] in ("link-down", "flap"):
            assert s["args"]["iface"] in ("eth0", "eth1", "eth2")
        if s["kind"] == "one-way":
            assert s["args"]["iface"] in (None, ["eth0"], ["eth1"], ["eth2"])
    assert any(s["args"].get("whole") for s in steps if s["kind"] == "freeze")


def test_fault_effects_name_channels_and_units():
    assert FAULTS["one-way"].effect({"to": "b", "iface": ["eth1"]}) == {"cut": ["eth1:a>b"]}
    assert FAULTS["link-down"].effect({"unit": "a", "iface": "eth0"})["client_down"] == ["a"]
    assert "sync" in FAULTS["partition"].effect({})["cut"]
    assert FAULTS["killall"].effect({"unit": "b"}) == {"dead": ["b"]}


def result():
    return {
        "seed": 3,
        "fast": True,
        "faults": 1,
        "command": "carpool lab chaos --seed 3",
        "start": 100.0,
        "end": 110.0,
        "duration": 10.0,
        "bounds": {
            "advert": 0.02,
            "master_down": 0.07,
            "overlap": 0.1,
            "stale": 0.1,
            "takeover": 0.47,
            "sample": 0.02,
        },
        "log": [
            {
                "id": 1,
                "kind": "killall",
                "unit": "a",
                "params": {},
                "inject": 102.0,
                "heal": 104.0,
                "outage": 0.04,
                "outcome": "healed",
            }
        ],
        "canaries": [
            {
                "unit": "b",
                "address": "198.18.0.10",
                "start": 100.5,
                "end": 101.0,
                "caught": True,
                "verdict": "I1 flagged the canary",
            }
        ],
        "canary_ok": True,
        "violations": [
            {
                "invariant": "I1",
                "address": "198.18.0.10",
                "unit": None,
                "start": 100.5,
                "end": 101.0,
                "duration": 0.5,
                "detail": "<both>",
                "faults": [],
                "canary": True,
            }
        ],
        "violation_count": 0,
        "summary": {
            "killall": {
                "count": 1,
                "failed": 0,
                "violations": 0,
                "outage_median": 0.04,
                "outage_max": 0.04,
            }
        },
        "longest": {"double_holder": 0.0, "stale_address": 0.0},
        "held": {
            "a 198.18.0.10": [[100.0, 102.01]],
            "b 198.18.0.10": [[100.5, 101.0], [102.05, 110.0]],
        },
        "gaps": [[102.0, 102.04]],
        "samples": {"count": 900, "max_gap": 0.013},
    }


def test_report_is_one_self_contained_page():
    page = render_html(result())
    assert page.count("<svg") == 1 and "PASS" in page
    assert "<script" not in page and "http://" not in page.replace(
        'xmlns="http://www.w3.org/2000/svg"', ""
    )
    assert "&lt;both&gt;" in page  # escaped
    assert "killall" in summary_table(result())
