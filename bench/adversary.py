#!/usr/bin/env python3
"""Attacks from a host on the client LAN without the secret, against the lab pair: per attack,
did the pair move (a failover), darken (a moment with no active unit) or stall (the election's
loop late), what did the standby count, and what did it cost its daemon (CPU).

    .venv/bin/python bench/adversary.py [--duration 5] [--auth carpool,carp] [--json FILE]

Attacks (carpool.lab.attacker): one captured advert of the active unit re-sent 10 times a
second as a stranger's with the best rank, replayed as it was, turned into a bow-out or a
demote 255 (both from the active unit's address); a flood of poison doctor probes (3000/s);
and connection attempts to the standby's sync port (6973) from the client, 200 a second.
Each runs against the pair twice in the same run: with the default `ha.auth = "carpool"`, and
with `ha.auth = "carp"` (CARP's own HMAC, what ucarp and BSD CARP speak) as the peer to compare
with. Results: BENCHMARKS.md, "Adversary".
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from carpool.lab import Lab, machine_lock
from carpool.lab.topology import CLIENT, UNIT_ADDR

ADVERT_ATTACKS = {"stranger": 10, "replay": 10, "bow-out": 10, "demote": 10, "probe": 3000}
SYNC_FLOOD = r"""
import socket, sys, time
host, rate, duration = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
start, tried = time.monotonic(), 0
while time.monotonic() - start < duration and tried < rate * duration:
    s = socket.socket(); s.setblocking(False)
    try:
        s.connect_ex((host, 6973))
    finally:
        s.close()
    tried += 1
    time.sleep(max(0.0, start + tried / rate - time.monotonic()))
print(tried)
"""
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | None) -> float:
    if not pid:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def eth0(unit: str) -> str:
    return UNIT_ADDR[unit]["eth0"].split("/")[0]


def attack_proc(lab: Lab, name: str, active: str, standby: str, duration: float):
    if name == "sync-flood":
        argv = [lab.python(), "-c", SYNC_FLOOD, eth0(standby), "200", str(duration)]
    else:
        argv = [lab.python(), "-m", "carpool.lab.attacker", name, "--source", eth0(active)]
        argv += ["--rate", str(ADVERT_ATTACKS[name]), "--duration", str(duration)]
    return lab.spawn(CLIENT, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_one(lab: Lab, name: str, duration: float) -> dict:
    active = lab.wait_for_master(30)
    standby = "b" if active == "a" else "a"
    before = {u: lab.unit_status(u) for u in ("a", "b")}
    pid = lab.daemon_pid(standby)
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    proc = attack_proc(lab, name, active, standby, duration)
    samples, dark, masters = 0, 0, set()
    for _ in range(int(duration / 0.1) + 50):  # bounded: the attack's length and some
        states = lab.states()
        held = [u for u, s in states.items() if s == "master"]
        samples += 1
        dark += len(held) != 1
        masters.update(held)
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    out, err = proc.communicate(timeout=60)
    elapsed = time.monotonic() - t0
    cpu = (cpu_seconds(pid) - cpu0) / elapsed * 100
    after = {u: lab.unit_status(u) for u in ("a", "b")}
    transitions = sum(
        after[u]["counters"]["transitions"] - before[u]["counters"]["transitions"]
        for u in ("a", "b")
    )
    late = sum(
        after[u]["counters"]["timer_late_over_interval"]
        - before[u]["counters"]["timer_late_over_interval"]
        for u in ("a", "b")
    )
    drops = {
        k: v - before[standby]["drops"].get(k, 0)
        for k, v in after[standby]["drops"].items()
        if v - before[standby]["drops"].get(k, 0)
    }
    doctor = sum(after[standby]["doctor"].values()) - sum(before[standby]["doctor"].values())
    sent = out.strip().splitlines()[-1] if out.strip() else err.strip()[-200:]
    return {
        "attack": name,
        "moved": transitions > 0 or masters != {active},
        "darkened": dark,
        "samples": samples,
        "stalled": late,
        "standby_cpu_pct": round(cpu, 1),
        "drops": drops,
        "doctor_counted": doctor,
        "sent": sent,
    }


def run_form(lab: Lab, auth: str, duration: float) -> list[dict]:
    for unit in ("a", "b"):
        lab.stop_unit(unit)
    lab.write_configs(overrides={"ha.auth": auth} if auth != "carpool" else {})
    lab.start_units()
    idle = run_idle(lab, duration)
    rows = [idle]
    for name in [*ADVERT_ATTACKS, "sync-flood"]:
        rows.append(run_one(lab, name, duration))
        lab.wait_for(lambda: lab.master() is not None, 30, what="one master again")
    return rows


def run_idle(lab: Lab, duration: float) -> dict:
    active = lab.wait_for_master(30)
    standby = "b" if active == "a" else "a"
    pid = lab.daemon_pid(standby)
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(duration)
    cpu = (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0) * 100
    return {"attack": "(none)", "standby_cpu_pct": round(cpu, 1)}


def table(results: dict[str, list[dict]]) -> str:
    lines = [
        f"{'ha.auth':8} {'attack':11} {'moved':5} {'dark':>4} {'late':>4} {'cpu%':>5}  counted",
        "-" * 78,
    ]
    for auth, rows in results.items():
        for r in rows:
            counted = ", ".join(f"{k} {v}" for k, v in sorted(r.get("drops", {}).items()))
            if r.get("doctor_counted"):
                counted += f"{', ' if counted else ''}doctor {r['doctor_counted']}"
            lines.append(
                f"{auth:8} {r['attack']:11} {str(r.get('moved', '')):5} "
                f"{r.get('darkened', ''):>4} {r.get('stalled', ''):>4} "
                f"{r['standby_cpu_pct']:>5}  {counted or '-'}"
            )
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=5.0, help="seconds per attack")
    p.add_argument("--auth", default="carpool,carp", help="the forms to attack, in order")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()
    results: dict[str, list[dict]] = {}
    with machine_lock():
        lab = Lab()
        try:
            lab.up()
            for auth in args.auth.split(","):
                results[auth] = run_form(lab, auth, args.duration)
        finally:
            lab.down()
    print(table(results))
    moved = {a: [r["attack"] for r in rows if r.get("moved")] for a, rows in results.items()}
    print("moved the pair:", json.dumps(moved))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 1 if moved.get("carpool") else 0


if __name__ == "__main__":
    sys.exit(main())
