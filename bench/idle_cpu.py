#!/usr/bin/env python3
"""Idle CPU of a settled pair, by what its document holds: carpool dual-stack or IPv4-only, with
the lab's virtual services (6 health checks every 0.5 s) or without (the HA core only, the
work keepalived does), beside keepalived in the same run.

    .venv/bin/python bench/idle_cpu.py [--seconds 30] [--profiles default,fast]
        [--variants "IPv4-only, no services,keepalived"] [--threads] [--json FILE]

Each variant: the pair started, settled, then utime+stime of each unit's processes (carpool
supervisor + worker, keepalived parent + VRRP child) over the window, in % of one core
(bench/failover.py's measurement). The lab lock is held throughout.

With --threads, each carpool unit's threads over the same window: wake-ups a second (the
scheduler's timeslices, /proc/PID/task/TID/schedstat), µs of CPU per wake-up and % of a core,
by the thread's kernel name (the daemon names its threads; the main threads are the
supervisor's and the worker's event loop).

The variants "python floor" and "python floor, eth0+eth2" run bench/advert_floor.py instead: an
asyncio program doing only the adverts' wire work (the daemon's codec, HMAC and sockets) on
carpool's three paths, or on keepalived's two. What carpool costs above the first is its own
work; what the floors cost above keepalived is the interpreter and the third path.

Printed first, this machine's floor for a Python daemon: the thread time of one wake-up of a
thread that only sleeps in poll() for 100 ms (and of the same thread sending one 40-byte UDP
datagram to loopback per wake), the cost any hello, advert or timer pays before its own work.
"""

from __future__ import annotations

import argparse
import json
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import failover as fb  # the pairs and the measurement are the failover bench's
from carpool.lab import Lab, LabError, machine_lock
from carpool.lab.ns import alive, wait_for
from carpool.lab.topology import unit_ns
from carpool.lab.units import ipv4_only

VARIANTS = {
    "dual-stack, services": None,
    "dual-stack, no services": {"virtual_service": []},
    "IPv4-only, services": ipv4_only(),
    "IPv4-only, no services": {**ipv4_only(), "virtual_service": []},
    # the fast detector as the releases before ran it by default (automatic is 250 ms x 2)
    "IPv4-only, no services, hellos 100 ms x 3": {
        **ipv4_only(),
        "virtual_service": [],
        "ha.liveness_ms": 100,
        "ha.liveness_multiplier": 3,
    },
    # the same without the fast detector: what its hellos and carrier reads cost
    "IPv4-only, no services, no detector": {
        **ipv4_only(),
        "virtual_service": [],
        "ha.liveness_ms": 0,
    },
}


def write_configs(lab, profile, overrides: dict | None) -> None:
    """The lab's documents with `overrides`, and a fast profile's interval."""
    fast = {"ha.fast_interval_ms": round(profile.interval * 1000)} if profile.fast else {}
    lab.write_configs(fast=profile.fast, overrides={**(overrides or {}), **fast} or None)


class Variant(fb.CarpoolPair):
    def __init__(self, lab, profile, overrides):
        super().__init__(lab, profile)
        self.overrides = overrides

    def start(self) -> str:
        write_configs(self.lab, self.profile, self.overrides)
        self.lab.start_units(timeout=fb.SETTLE_TIMEOUT)
        return self.settled()


# the floor pairs: carpool's three IPv4 advert paths, and keepalived's two (no heartbeat cable)
FLOORS = {"python floor": None, "python floor, eth0+eth2": ["eth0", "eth2"]}


class FloorPair:
    """bench/advert_floor.py on the IPv4-only configuration: unit a sends the adverts, unit b
    judges them; nothing else runs. `links`: only these paths (None: all three). Its report (adverts judged valid, dropped) is checked at stop:
    a floor that heard too few adverts measured nothing."""

    name = "python floor"
    SCRIPT = Path(__file__).resolve().parent / "advert_floor.py"

    def __init__(self, lab, profile, workdir: Path, links: list[str] | None = None):
        self.lab, self.profile, self.links = lab, profile, links
        self.report_path = workdir / "floor-report.json"
        self.procs: dict[str, subprocess.Popen] = {}
        self.report: dict = {}
        self.t0 = 0.0

    def start(self) -> str:
        write_configs(self.lab, self.profile, VARIANTS["IPv4-only, no services"])
        self.report_path.unlink(missing_ok=True)
        only = ["--links", ",".join(self.links)] if self.links else []
        for unit, args in (("b", ["listen", "--report", str(self.report_path)]), ("a", ["send"])):
            mode, *rest = [*args, *only]
            self.procs[unit] = subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    unit_ns(unit),
                    sys.executable,
                    str(self.SCRIPT),
                    mode,
                    str(self.lab.config_path(unit)),
                    *rest,
                ],
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.t0 = time.monotonic()
        return self.settled()

    def settled(self) -> str:
        wait_for(
            lambda: (
                all(p.poll() is None for p in self.procs.values())
                and time.monotonic() - self.t0 > 1.0
            ),
            10,
            what="the floor pair running",
        )
        return "a"

    def pids(self, unit: str) -> list[int]:
        return [self.procs[unit].pid]

    def stop(self) -> None:
        for proc in self.procs.values():
            if alive(proc.pid):
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        elapsed = time.monotonic() - self.t0
        self.procs.clear()
        try:
            self.report = json.loads(self.report_path.read_text())
        except (OSError, ValueError) as e:
            raise LabError(f"the floor pair's listener left no report: {e}") from None
        expected = elapsed / self.profile.interval * (len(self.links) if self.links else 3)
        if self.report.get("valid", 0) < expected / 2:
            raise LabError(f"the floor pair heard {self.report} of ~{expected:.0f} adverts")


def wake_floor(send: bool, wakes: int = 50, period: float = 0.1) -> float:
    """µs of thread time per wake-up (median of 5 blocks) of a thread asleep in poll()."""
    out: list[float] = []

    def run() -> None:
        poller = select.poll()
        r, w = socket.socketpair()
        poller.register(r, select.POLLIN)
        sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sink.bind(("127.0.0.1", 0))
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            for _ in range(5):
                start = time.thread_time_ns()
                for _ in range(wakes // 5):
                    poller.poll(period * 1000)
                    if send:
                        tx.sendto(bytes(40), sink.getsockname())
                        sink.recv(64)
                out.append((time.thread_time_ns() - start) / (wakes // 5) / 1000)
        finally:
            for s in (r, w, sink, tx):
                s.close()

    thread = threading.Thread(target=run, name="wake-floor")
    thread.start()
    thread.join(wakes * period * 3 + 10)
    return statistics.median(out) if out else float("nan")


def thread_times(pids: dict[str, int]) -> dict[tuple[str, str], tuple[int, int]]:
    """(process role, thread name) -> (run ns, timeslices), summed over threads of one name."""
    out: dict[tuple[str, str], tuple[int, int]] = {}
    for role, pid in pids.items():
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                comm = (task / "comm").read_text().strip()
                run_ns, _wait, slices = (int(x) for x in (task / "schedstat").read_text().split())
            except (OSError, ValueError):
                continue  # the thread ended meanwhile
            name = "(main)" if task.name == str(pid) else comm
            ns, n = out.get((role, name), (0, 0))
            out[(role, name)] = (ns + run_ns, n + slices)
    return out


def thread_rows(before, after, seconds: float) -> list[dict]:
    rows = []
    for key, (ns, n) in sorted(after.items()):
        ns0, n0 = before.get(key, (0, 0))
        wakes, run_us = n - n0, (ns - ns0) / 1000
        if wakes <= 0:
            continue
        rows.append(
            {
                "process": key[0],
                "thread": key[1],
                "wakes_per_s": round(wakes / seconds, 1),
                "us_per_wake": round(run_us / wakes),
                "cpu_percent": round(100 * run_us / 1e6 / seconds, 3),
            }
        )
    return rows


def _split(text: str, names: list[str]) -> list[str]:
    """The variant names in a comma-separated list whose names may hold commas themselves."""
    out, rest = [], text.strip()
    while rest:
        match = max((n for n in names if rest.startswith(n)), key=len, default=None)
        if match is None:
            raise SystemExit(f"--variants: {rest.split(',')[0]!r} is none of: {', '.join(names)}")
        out.append(match)
        rest = rest[len(match) :].lstrip(",").strip()
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=30.0, help="idle window per variant")
    p.add_argument("--profiles", default="default,fast")
    p.add_argument("--fast-interval-ms", type=int, default=20)
    p.add_argument(
        "--variants",
        default=",".join([*VARIANTS, "keepalived"]),
        help="comma-separated, from: " + ", ".join([*VARIANTS, "keepalived", *FLOORS]),
    )
    p.add_argument("--threads", action="store_true", help="carpool's threads one by one")
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args(argv)
    if not 1 <= args.seconds <= 600:
        p.error("--seconds: 1..600")
    profiles = fb.profiles(args.fast_interval_ms)
    names = [*VARIANTS, "keepalived", *FLOORS]
    chosen = _split(args.variants, names)  # (names hold ", " themselves)
    wanted = [x for x in args.profiles.split(",") if x]
    if set(wanted) - set(profiles):
        p.error(f"--profiles: from {', '.join(profiles)}")
    floor = {"wake_us": wake_floor(False), "wake_send_us": wake_floor(True)}
    floor_line = (
        f"floor: a Python thread's wake-up {floor['wake_us']:.0f} µs of thread time, with a "
        f"datagram sent {floor['wake_send_us']:.0f} µs"
    )
    fb.log(floor_line)
    rows = []
    workdir = Path(tempfile.mkdtemp(prefix="carpool-idle-", dir="/run"))
    with machine_lock(timeout=3600):
        lab = Lab()
        lab.up(start_units=False)
        try:
            for pname in wanted:
                profile = profiles[pname]
                pairs = [
                    (name, Variant(lab, profile, o))
                    for name, o in VARIANTS.items()
                    if name in chosen
                ]
                if "keepalived" in chosen:
                    pairs.append(("keepalived", fb.KeepalivedPair(lab, profile, workdir)))
                pairs += [
                    (name, FloorPair(lab, profile, workdir, links))
                    for name, links in FLOORS.items()
                    if name in chosen
                ]
                for name, pair in pairs:
                    master = pair.start()
                    traced = args.threads and isinstance(pair, Variant)
                    if traced:
                        procs = {
                            f"{role} {kind}": pid
                            for role, unit in (("master", master), ("backup", fb.other(master)))
                            for kind, pid in zip(
                                ("supervisor", "worker"), pair.pids(unit), strict=True
                            )
                        }
                        before, t0 = thread_times(procs), time.monotonic()
                    try:
                        cpu = fb.idle_cpu(pair, args.seconds)
                        if traced:
                            threads = thread_rows(
                                before, thread_times(procs), time.monotonic() - t0
                            )
                    finally:
                        pair.stop()
                    row = {
                        "profile": pname,
                        "variant": name,
                        "master": cpu["master"]["cpu_percent"],
                        "backup": cpu["backup"]["cpu_percent"],
                        "seconds": cpu["seconds"],
                    }
                    if traced:
                        row["threads"] = threads
                    if isinstance(pair, FloorPair):
                        row["floor_heard"] = pair.report
                    fb.log(f"  {row}")
                    rows.append(row)
        finally:
            lab.down()
    print("| profile | pair | master % | backup % | window s |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['profile']} | {r['variant']} | {r['master']:.2f} | {r['backup']:.2f} | "
            f"{r['seconds']} |"
        )
    for r in rows:
        if not r.get("threads"):
            continue
        print(f"\n{r['profile']}, {r['variant']}: threads")
        print("| process | thread | wake-ups/s | µs per wake-up | % of a core |")
        print("|---|---|---|---|---|")
        for t in r["threads"]:
            print(
                f"| {t['process']} | {t['thread']} | {t['wakes_per_s']} | {t['us_per_wake']} | "
                f"{t['cpu_percent']:.3f} |"
            )
    print(f"\n{floor_line}")
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S %z')}, {fb.os.cpu_count()} CPUs")
    if args.json:
        Path(args.json).write_text(json.dumps({"floor": floor, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
