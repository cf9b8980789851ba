#!/usr/bin/env python3
"""A cut heartbeat cable must never fail over (issue 16): N cuts in a row on a settled pair.

    .venv/bin/python bench/cut_cable.py [--runs 20] [--fast]

Each run pulls the cable (eth1 down at both ends), watches both units for a master-down period
and an advert more (the longest the advert timer could take to act), then heals and waits for a
settled pair. A run fails over when the master changes or either unit counts a transition; the
standby's fast detector must have said "cut" (it asked the other paths and the partner
answered). Prints each run and the totals; exits 1 when any run failed over.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from carpool.lab import Lab, machine_lock


def run_once(lab: Lab, watch_s: float) -> dict:
    master = lab.wait_for_master()
    standby = "b" if master == "a" else "a"
    before = {u: lab.unit_status(u)["counters"]["transitions"] for u in ("a", "b")}
    cuts = lab.unit_status(standby)["liveness"]["counters"]["cut"]
    lab.cut_heartbeat()
    deadline = time.monotonic() + watch_s
    moved = False
    for _ in range(int(watch_s / 0.05) + 1):  # bounded: one look every 50 ms
        if time.monotonic() > deadline:
            break
        if lab.states() != {master: "master", standby: "backup"}:
            moved = True
        time.sleep(0.05)
    after = {u: lab.unit_status(u) for u in ("a", "b")}
    transitions = sum(after[u]["counters"]["transitions"] - before[u] for u in ("a", "b"))
    verdict = after[standby]["liveness"]
    lab.heal()
    return {
        "master": master,
        "failed_over": moved or transitions > 0,
        "transitions": transitions,
        "cut_seen": verdict["counters"]["cut"] > cuts,
        "verdict": verdict["state"],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--fast", action="store_true", help="the fast profile (20 ms adverts)")
    args = ap.parse_args()
    if not 1 <= args.runs <= 200:
        ap.error("--runs 1..200")
    with machine_lock(timeout=1800):
        lab = Lab()
        try:
            lab.up(fast=args.fast)
            watch_s = (0.1 if args.fast else 3.0) + 1.0  # master-down and an advert more
            results = []
            for n in range(1, args.runs + 1):
                r = run_once(lab, watch_s)
                results.append(r)
                print(
                    f"run {n}/{args.runs}: master {r['master']}, "
                    f"{'FAILED OVER' if r['failed_over'] else 'kept'}, standby's verdict "
                    f"{r['verdict']} (cut seen: {r['cut_seen']})",
                    flush=True,
                )
        finally:
            lab.down()
    failed = sum(r["failed_over"] for r in results)
    seen = sum(r["cut_seen"] for r in results)
    profile = "fast" if args.fast else "default"
    print(f"{profile}: {failed} failovers in {len(results)} cuts; the cut recognised in {seen}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
