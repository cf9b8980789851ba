"""The fault table (carpool.lab.faults.FAULTS) drives `carpool lab fault`, the chaos campaign
and the failover benchmark; no lab needed (the faults run on a recorder)."""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import sys
from pathlib import Path

import pytest

from carpool.cli import build_parser
from carpool.lab.chaos import CHAOS, WEIGHTS, plan
from carpool.lab.faults import FAULTS

ROOT = Path(__file__).resolve().parents[2]


class Recorder:
    """Stands in for a Lab: every method call is recorded as (name, args)."""

    def __init__(self):
        self.calls: list[tuple] = []

    def __getattr__(self, name):
        return lambda *args: self.calls.append((name, args))


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def fault_parser():
    lab = subparsers(build_parser())["lab"]
    action = next(
        a for a in subparsers(lab)["fault"]._actions if isinstance(a, argparse._SubParsersAction)
    )
    return action


def test_every_fault_is_a_lab_fault_choice_with_its_help_and_arguments():
    action = fault_parser()
    assert list(action.choices) == list(FAULTS)
    helps = {a.dest: a.help for a in action._choices_actions}
    for name, fault in FAULTS.items():
        assert helps[name] == fault.help
        flags = [
            a.option_strings[0]
            for a in action.choices[name]._actions
            if a.option_strings and a.dest != "help"
        ]
        assert flags == [flag for flag, _ in fault.arguments] + ["--force"]


def test_chaos_kinds_are_table_entries_and_plan_what_lab_fault_accepts():
    assert list(WEIGHTS) == list(CHAOS) and set(CHAOS) <= set(FAULTS)
    for step in plan(400, 3, vmac=True):
        fault = FAULTS[step["kind"]]
        assert set(step["args"]) <= set(fault.dests)
        assert (step["role"] is None) == (fault.target.unit is None)
        assert fault.target.unit is None or fault.target.unit in fault.dests


@pytest.mark.parametrize(
    "seed, fast, vmac, digest",
    [
        # plan(300, ...) as drawn before the table existed: a seed keeps its plan
        (11, False, False, "59ee611027c56fc7471b67db9bc8778fb5004340a68de313fe4ae4cc84678da0"),
        (11, True, True, "ab092b17e58ace9ccb6debcd9f90295f05629fbeb32b8cdaffaf5d8c0784e51e"),
        (7, False, True, "3c24b4c0686eb3c99f0966e11992ce5c50b629b61c750fdd3c15458e3c69a151"),
    ],
)
def test_a_seed_keeps_its_plan(seed, fast, vmac, digest):
    steps = plan(300, seed, fast=fast, vmac=vmac)
    assert hashlib.sha256(json.dumps(steps, sort_keys=True).encode()).hexdigest() == digest


@pytest.mark.parametrize(
    "argv, call",
    [
        (["kill", "--unit", "a"], ("kill", ("a",))),
        (["freeze", "--unit", "b", "--whole"], ("freeze", ("b", True))),
        (["flap", "--unit", "a", "--iface", "eth2", "--times", "2"], ("flap", ("a", "eth2", 2))),
        (["one-way", "--to", "b", "--iface", "eth1"], ("one_way", ("b", ["eth1"]))),
        (["one-way", "--to", "b"], ("one_way", ("b", None))),
        (["block-vmac", "--vhid", "3"], ("block_vmac", (3,))),
        (["stop-server", "--server", "r2"], ("stop_server", ("r2",))),
        (["pull-cable", "--unit", "a", "--iface", "eth0"], ("pull_cable", ("a", "eth0"))),
    ],
)
def test_lab_fault_arguments_reach_the_lab_method(argv, call):
    args = build_parser().parse_args(["lab", "fault", *argv])
    fault = FAULTS[args.fault]
    values = {dest: getattr(args, dest) for dest in fault.dests}
    assert "command" not in values and "force" not in values
    lab = Recorder()
    fault.inject(lab, values)
    assert lab.calls[0][0] == call[0] and lab.calls[0][1][: len(call[1])] == call[1]


def test_heals_undo_on_the_lab():
    lab = Recorder()
    FAULTS["freeze"].heal(lab, {"unit": "a"})
    FAULTS["link-down"].heal(lab, {"unit": "b", "iface": "eth1"})
    FAULTS["one-way"].heal(lab, {"to": "b"})
    FAULTS["crash"].heal(lab, {"unit": "a"})
    FAULTS["thaw"].heal(lab, {"unit": "a"})
    assert lab.calls == [
        ("thaw", ("a",)),
        ("link_up", ("b", "eth1")),
        ("unblock", ()),
        ("heal", ()),
    ]


def test_the_failover_benchmark_dispatches_through_the_table(monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_failover", ROOT / "bench/failover.py")
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, bench)  # its dataclasses look themselves up
    spec.loader.exec_module(bench)
    assert set(bench.FAULTS) == {"crash", "kill", "term", "link", "carrier"}
    lab = Recorder()
    pair = bench.CarpoolPair(lab, None)
    for name in ("crash", "link", "carrier"):
        pair.fault(name, "a")
    assert lab.calls == [
        ("crash", ("a",)),
        ("link_down", ("a", "eth0")),
        ("pull_cable", ("a", "eth0")),
    ]
    for name in bench.FAULTS:  # the keepalived pair answers every method the table calls
        lab = Recorder()
        bench.inject(name, lab, "b")
        assert lab.calls[0][0] in vars(bench.KeepalivedPair)
