"""A short chaos campaign (issue 11) in `make test`: a fixed seed, 10 random faults on the fast
profile (seed 11: one-way on every path and on one, crash + killall of both units, freeze of
the worker and of whole units, reboots); every invariant holds and the canary (a double holder
made by hand) is caught. The default profile's campaign (75 s for 6 faults) left `make test`
to keep it under 20 minutes: it runs in bench/chaos.py (200 faults a profile) and in the spot
campaigns recorded at each stop (BENCHMARKS.md, "Chaos campaigns")."""

from __future__ import annotations

import json

import pytest

from carpool.lab.chaos import run_campaign
from carpool.lab.chaos_report import summary_table

LAB_OPTIONS = {"fast": True}


@pytest.mark.parametrize("fast, faults, seed", [(True, 10, 11)], ids=["fast"])
def test_short_campaign_holds_every_invariant(lab, tmp_path, fast, faults, seed):
    result = run_campaign(
        lab, faults=faults, seed=seed, fast=fast, report_dir=tmp_path, say=lambda text: None
    )
    assert result["canary_ok"], result["canaries"]
    assert (tmp_path / "chaos.html").exists() and json.loads((tmp_path / "chaos.json").read_text())[
        "seed"
    ] == seed
    real = [v for v in result["violations"] if not v["canary"]]
    kinds = {f["id"]: f["kind"] for f in result["log"]}
    assert not real, (
        f"{result['command']}: {len(real)} violations\n"
        + "\n".join(
            f"{v['invariant']} faults {[(i, kinds.get(i)) for i in v['faults']]}: {v['detail']}"
            for v in real
        )
        + "\n"
        + summary_table(result)
    )
