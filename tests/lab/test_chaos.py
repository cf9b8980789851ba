"""A short chaos campaign (issue 11) in `make test`: a fixed seed, 15 random faults on the fast
profile, then 6 on the default one; every invariant holds and the canary (a double holder made
by hand) is caught. The long campaign is bench/chaos.py."""
from __future__ import annotations

import json

import pytest

from carpool.lab.chaos import run_campaign
from carpool.lab.chaos_report import summary_table

LAB_OPTIONS = {"fast": True}
SEED = 11


@pytest.mark.parametrize("fast, faults", [(True, 15), (False, 6)], ids=["fast", "default"])
def test_short_campaign_holds_every_invariant(lab, tmp_path, fast, faults):
    result = run_campaign(lab, faults=faults, seed=SEED, fast=fast, report_dir=tmp_path,
                          say=lambda text: None)
    assert result["canary_ok"], result["canaries"]
    assert (tmp_path / "chaos.html").exists() and json.loads(
        (tmp_path / "chaos.json").read_text())["seed"] == SEED
    real = [v for v in result["violations"] if not v["canary"]]
    kinds = {f["id"]: f["kind"] for f in result["log"]}
    assert not real, (f"{result['command']}: {len(real)} violations\n" + "\n".join(
        f"{v['invariant']} faults {[(i, kinds.get(i)) for i in v['faults']]}: {v['detail']}"
        for v in real) + "\n" + summary_table(result))
