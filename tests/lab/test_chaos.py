"""A short chaos campaign (issue 11) in `make test`: fixed seeds, 15 random faults on the fast
profile (seed 11: one-way on every path and on one, crash + killall of both units, freeze of
the worker and of whole units, reboots, a flap, blocked adverts, a server stopped under load),
then 6 on the default one (seed 5: two partitions with a change on each side, one-way, killall,
a flap); every invariant holds and the canary (a double holder made by hand) is caught. The
long campaign is bench/chaos.py."""

from __future__ import annotations

import json

import pytest

from carpool.lab.chaos import run_campaign
from carpool.lab.chaos_report import summary_table

LAB_OPTIONS = {"fast": True}


@pytest.mark.parametrize(
    "fast, faults, seed", [(True, 15, 11), (False, 6, 5)], ids=["fast", "default"]
)
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
