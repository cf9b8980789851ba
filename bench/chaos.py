#!/usr/bin/env python3
"""The long chaos campaign (issue 11): N random faults per timer profile, invariants checked.

    .venv/bin/python bench/chaos.py [--faults 200] [--seed 11] [--profile default|fast|both]
                                    [--report DIR] [--json FILE|-]

For each profile a fresh lab and `carpool.lab.chaos.run_campaign` with the same seed (so the
same fault sequence, with hold times scaled to the profile); prints the summary per fault kind,
the violations, and the longest double-holder window while a channel joined the units and the
longest stale-address window after a unit stopped being live (measured with no bound at all:
what the pair did, not what the invariants allowed), next to the issue's targets (two advert
intervals; fast profile 100 ms). Reports in DIR/<profile>/ (chaos.json, chaos.html).
Holds the machine's lab lock for the whole run; exit 1 on any violation or a missed canary.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from carpool.lab import Lab
from carpool.lab.chaos import longest_windows, run_campaign
from carpool.lab.chaos_report import summary_table
from carpool.lab.ns import machine_lock


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--faults", type=int, default=200)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--profile", choices=("default", "fast", "both"), default="both")
    p.add_argument("--report", default="chaos-report", metavar="DIR")
    p.add_argument("--json", metavar="FILE", help="the figures as JSON (- for stdout)")
    args = p.parse_args(argv)
    profiles = ["default", "fast"] if args.profile == "both" else [args.profile]
    figures, failed = {}, False
    with machine_lock(timeout=900):
        lab = Lab()
        try:
            for profile in profiles:
                fast = profile == "fast"
                result = run_campaign(
                    lab,
                    faults=args.faults,
                    seed=args.seed,
                    fast=fast,
                    report_dir=Path(args.report) / profile,
                    say=lambda t: print(t, flush=True),
                )
                longest = longest_windows(result)
                target = 0.1 if fast else 2 * result["bounds"]["advert"]
                figures[profile] = {
                    "command": result["command"],
                    "seed": args.seed,
                    "faults": args.faults,
                    "duration": result["duration"],
                    "violations": result["violation_count"],
                    "canary_ok": result["canary_ok"],
                    "longest_double_holder": longest["double_holder"],
                    "longest_stale_address": longest["stale_address"],
                    "target": target,
                    "summary": result["summary"],
                }
                failed |= result["violation_count"] > 0 or not result["canary_ok"]
                print(f"\n== {profile} profile: {result['command']}")
                print(summary_table(result))
                for v in result["violations"]:
                    if not v["canary"]:
                        print(
                            f"VIOLATION {v['invariant']} +{v['start'] - result['start']:.3f}s "
                            f"faults {v['faults']}: {v['detail']}"
                        )
                print(
                    f"violations {result['violation_count']}; canary "
                    f"{'caught' if result['canary_ok'] else 'NOT CAUGHT'}; longest double "
                    f"holder {longest['double_holder']:.3f}s, longest stale address "
                    f"{longest['stale_address']:.3f}s (target <= {target:.3f}s); "
                    f"{result['duration']:.0f}s; report {Path(args.report) / profile}\n"
                )
        finally:
            lab.down()
    if args.json:
        text = json.dumps(figures, indent=2)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
