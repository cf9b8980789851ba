#!/usr/bin/env python3
"""Failover benchmark: carpool against a keepalived pair, in the same lab, in the same run.

    .venv/bin/python bench/failover.py [--runs 7] [--quick] [--family 4|6] [--json FILE|-]

For each timer profile and each fault, N runs per implementation; the outage is measured from
the client: `carpool.lab.probe` in cp-c1 pings the shared address 198.18.0.10 every 2 ms (with
--family 6: 2001:2::10, ICMPv6), and the outage of a run is the longest reply gap that ends
after the fault was injected.

--family 6 measures the IPv6 shared addresses of the (dual-stack) lab: carpool unchanged (its
adverts go out in both families; a takeover moves both), keepalived with the same instances on
2001:2::10/64 and 2001:2:0:2::1/64 (VRRPv3 in both profiles: VRRPv2 has no IPv6). A takeover is
when the survivor holds the measured family's shared addresses.

Profiles
  default  carpool CARP advbase 1 (master down 3 s)  vs  keepalived VRRPv2 advert_int 1
           (master down 3 + (256 - 100)/256 = 3.61 s)
  fast     carpool fast = VRRPv3, ha.fast_interval_ms (default 20 ms)
           vs  keepalived VRRPv3 advert_int at the same interval
Faults (always on the unit that is master at that moment)
  crash    power loss: the unit's processes frozen, every link of it down, then SIGKILLed
  kill     SIGKILL: carpool's worker daemon (its supervisor withdraws the addresses);
           keepalived's parent and VRRP child (both frozen first, then killed)
  term     SIGTERM to carpool's supervisor / keepalived's parent (a clean stop)
  link     the unit's eth0 (lan, the client side) set down (`Lab.link_down`: an admin down,
           which netlink reports at once)
  carrier  the switch port of the unit's eth0 set down (`Lab.pull_cable`): the unit's eth0
           loses carrier, as when a cable is pulled (on a veth the kernel reports that at once;
           on a real NIC its linkwatch may hold it up to ~1 s, which carpool's 0.1 s carrier
           poll covers)
These are the lab's faults (carpool.lab.faults.FAULTS) with a benchmark name; on the keepalived
pair the process faults hit keepalived's processes instead (KeepalivedPair.kill/term/crash).

The keepalived pair mirrors carpool's lab configuration: state BACKUP and priority 100 on both
units, nopreempt (carpool's default "preferred none" never fails back), one instance on eth0
(198.18.0.10/24) and one on eth2 (198.18.2.1/24) in a sync group (carpool moves both addresses
together). keepalived runs in the foreground in cp-a and cp-b with its own config, pid files and
log in a private directory, and is stopped by pid. The carpool units are stopped meanwhile.

Every wait is bounded: a takeover that has not happened by the deadline is reported as such
("no takeover"), and an address still on a unit whose daemon was killed or stopped is reported
("VIP stays on the faulted unit") - that is what keepalived does after SIGKILL (DESIGN §7).

Idle CPU: utime+stime (from /proc/<pid>/stat) of every process of a unit (carpool supervisor +
worker; keepalived parent + VRRP child) over a quiet window on a settled pair, in % of one core.

The whole benchmark holds the machine's lab lock (other people run lab tests here).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from carpool.lab import Lab, LabError, LabTimeout, machine_lock
from carpool.lab.faults import FAULTS as LAB_FAULTS
from carpool.lab.ns import alive, cmdline, ip, read_pid, sh, signal_pid, wait_for
from carpool.lab.topology import (
    CLIENT,
    SHARED_LAN,
    SHARED_LAN6,
    SHARED_SRV,
    SHARED_SRV6,
    UNITS,
    links,
    unit_ns,
)

# The measured family's shared addresses (--family sets them once, before anything runs).
LAN, SRV = SHARED_LAN, SHARED_SRV
VIP = LAN.split("/")[0]
SHARED = {LAN, SRV}
FAMILY = 4


def use_family(family: int) -> None:
    global LAN, SRV, VIP, SHARED, FAMILY
    FAMILY = family
    LAN, SRV = (SHARED_LAN6, SHARED_SRV6) if family == 6 else (SHARED_LAN, SHARED_SRV)
    VIP, SHARED = LAN.split("/")[0], {LAN, SRV}


FAULTS = {f.bench: f for f in LAB_FAULTS.values() if f.bench}  # kill, term, crash, link, ...
IMPLS = ("carpool", "keepalived")
PROBE_INTERVAL = 0.002
BASELINE = 0.5  # s of probing before the fault
SETTLE_TIMEOUT = 30  # s for a pair to settle after a heal / start
CLK_TCK = os.sysconf("SC_CLK_TCK")
TARGETS = {  # (profile, fault): seconds, from the spec
    ("default", "crash"): 4.0,
    ("default", "link"): 0.1,
    ("default", "term"): 0.1,
    ("fast", "crash"): 0.1,
    ("fast", "link"): 0.1,
    ("fast", "term"): 0.1,
    # not in the spec's list of faults, but it is link loss too (a cable pulled)
    ("default", "carrier"): 0.1,
    ("fast", "carrier"): 0.1,
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def other(unit: str) -> str:
    return "b" if unit == "a" else "a"


def held(unit: str) -> set[str]:
    """The shared addresses configured in the unit's namespace (the kernel's view)."""
    out = sh(["ip", "-n", unit_ns(unit), f"-{FAMILY}", "-o", "addr", "show"], check=False).stdout
    word = "inet6" if FAMILY == 6 else "inet"
    found = set()
    for line in out.splitlines():
        words = line.split()
        if word in words:
            found.add(words[words.index(word) + 1])
    return found & SHARED


def cpu_ticks(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)


def freeze_and_kill(pids: list[int]) -> None:
    """SIGSTOP all, then SIGKILL all: none of them gets to clean up after the others."""
    for sig in (signal.SIGSTOP, signal.SIGKILL):
        for pid in pids:
            signal_pid(pid, sig, None)
    wait_for(lambda: not any(alive(p) for p in pids), 5.0, what=f"{pids} killed")


def inject(fault: str, on, unit: str) -> None:
    """The benchmark's fault on the master `unit`, through the lab's table; `on` is the Lab or a
    KeepalivedPair (the table calls them by the same names). Link faults take its eth0."""
    FAULTS[fault].inject(on, {"unit": unit, "iface": "eth0"})


def all_links_down(unit: str) -> None:
    ns = unit_ns(unit)
    for link in links(ns):
        if link["ifname"] != "lo":
            ip("link", "set", link["ifname"], "down", ns=ns)


@dataclass
class Profile:
    name: str
    fast: bool
    interval: float  # s between adverts
    deadline: float  # s after the fault to wait for a takeover
    tail: float  # s of probing after the takeover was seen


def profiles(fast_ms: int) -> dict[str, Profile]:
    return {
        "default": Profile("default", False, 1.0, 10.0, 1.0),
        "fast": Profile("fast", True, fast_ms / 1000, 3.0, 0.5),
    }


# -- the two pairs ----------------------------------------------------------------------------
class CarpoolPair:
    name = "carpool"

    def __init__(self, lab: Lab, profile: Profile):
        self.lab, self.profile = lab, profile

    def start(self) -> str:
        overrides = (
            {"ha.fast_interval_ms": round(self.profile.interval * 1000)}
            if self.profile.fast
            else None
        )
        self.lab.write_configs(fast=self.profile.fast, overrides=overrides)
        self.lab.start_units(timeout=SETTLE_TIMEOUT)
        return self.settled()

    def stop(self) -> None:
        for unit in UNITS:
            self.lab.stop_unit(unit)

    def settled(self) -> str:
        master = self.lab.wait_for_master(timeout=SETTLE_TIMEOUT)
        self.lab.wait_for(
            lambda: held(master) == SHARED and not held(other(master)),
            10,
            what=f"unit {master} holds the shared addresses, the other none",
        )
        return master

    def fault(self, name: str, unit: str) -> None:
        inject(name, self.lab, unit)

    def heal(self) -> str:
        self.lab.heal(timeout=SETTLE_TIMEOUT)
        return self.settled()

    def pids(self, unit: str) -> list[int]:
        return [p for p in (self.lab.supervisor_pid(unit), self.lab.daemon_pid(unit)) if p]

    def log_tail(self, unit: str) -> str:
        return self.lab.log_tail(unit)


KEEPALIVED_CONF = """\
# written by bench/failover.py for unit {unit} ({ns})
global_defs {{
    router_id {ns}
    vrrp_version {version}
    script_user root
    enable_script_security
}}
vrrp_sync_group PAIR {{
    group {{
        LAN
        SRV
    }}
}}
vrrp_instance LAN {{
    state BACKUP
    interface eth0
    virtual_router_id 51
    priority 100
    advert_int {interval}
    nopreempt
    virtual_ipaddress {{
        {lan} dev eth0
    }}
    notify {notify}
}}
vrrp_instance SRV {{
    state BACKUP
    interface eth2
    virtual_router_id 52
    priority 100
    advert_int {interval}
    nopreempt
    virtual_ipaddress {{
        {srv} dev eth2
    }}
    notify {notify}
}}
"""

NOTIFY_SH = """#!/bin/sh
# keepalived notify: $1 INSTANCE|GROUP, $2 name, $3 state
echo "$3" > {dir}/state-{unit}-$2.tmp && mv {dir}/state-{unit}-$2.tmp {dir}/state-{unit}-$2
"""


class KeepalivedPair:
    name = "keepalived"
    INSTANCES = ("LAN", "SRV")

    def __init__(self, lab: Lab, profile: Profile, workdir: Path):
        self.lab, self.profile = lab, profile
        self.dir = workdir / f"keepalived-{profile.name}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, subprocess.Popen] = {}
        self.signalled: list[int] = []
        interval = f"{profile.interval:g}"
        for unit in UNITS:
            notify = self.dir / f"notify-{unit}.sh"
            notify.write_text(NOTIFY_SH.format(dir=self.dir, unit=unit))
            notify.chmod(0o700)
            self.conf(unit).write_text(
                KEEPALIVED_CONF.format(
                    unit=unit,
                    ns=unit_ns(unit),
                    version=3 if profile.fast or FAMILY == 6 else 2,
                    interval=interval,
                    lan=LAN,
                    srv=SRV,
                    notify=notify,
                )
            )

    def conf(self, unit: str) -> Path:
        return self.dir / f"keepalived-{unit}.conf"

    def _pidfile(self, unit: str, kind: str) -> Path:
        return self.dir / f"{kind}-{unit}.pid"

    def _ours(self, pid: int | None, unit: str) -> int | None:
        return pid if alive(pid) and str(self.conf(unit)) in cmdline(pid) else None

    def parent_pid(self, unit: str) -> int | None:
        proc = self.procs.get(unit)
        return self._ours(proc.pid if proc else None, unit)

    def child_pid(self, unit: str) -> int | None:
        return self._ours(read_pid(self._pidfile(unit, "vrrp")), unit)

    def pids(self, unit: str) -> list[int]:
        return [p for p in (self.parent_pid(unit), self.child_pid(unit)) if p]

    def running(self, unit: str) -> bool:
        return self.parent_pid(unit) is not None and self.child_pid(unit) is not None

    def state(self, unit: str) -> set[str]:
        found = set()
        for inst in self.INSTANCES:
            try:
                found.add((self.dir / f"state-{unit}-{inst}").read_text().strip())
            except OSError:
                found.add("?")
        return found

    def start_unit(self, unit: str) -> None:
        if self.running(unit):
            return
        self._stop_unit(unit)
        for cidr, dev in ((LAN, "eth0"), (SRV, "eth2")):  # what a reboot clears
            ip("addr", "del", cidr, "dev", dev, ns=unit_ns(unit), check=False)
        for inst in self.INSTANCES:
            (self.dir / f"state-{unit}-{inst}").unlink(missing_ok=True)
        for kind in ("main", "vrrp"):
            self._pidfile(unit, kind).unlink(missing_ok=True)
        logf = open(self.dir / f"keepalived-{unit}.log", "ab")  # noqa: SIM115 (the process writes it after this block)
        try:
            logf.write(
                f"--- bench: starting keepalived in {unit_ns(unit)} at "
                f"{time.strftime('%H:%M:%S')}\n".encode()
            )
            logf.flush()
            self.procs[unit] = subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    unit_ns(unit),
                    "keepalived",
                    "-n",
                    "-l",
                    "-D",
                    "-G",
                    "-P",
                    "-f",
                    str(self.conf(unit)),
                    "-p",
                    str(self._pidfile(unit, "main")),
                    "-r",
                    str(self._pidfile(unit, "vrrp")),
                ],
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            logf.close()

        def up():
            proc = self.procs[unit]
            if proc.poll() is not None:
                raise LabError(
                    f"keepalived in {unit_ns(unit)} exited ({proc.returncode}):\n"
                    f"{self.log_tail(unit)}"
                )
            return self.running(unit) and self.state(unit) <= {"BACKUP", "MASTER"}

        wait_for(up, 15, what=f"keepalived in {unit_ns(unit)} running and in a state")

    def _stop_unit(self, unit: str, grace: float = 5.0) -> None:
        parent, child = self.parent_pid(unit), self.child_pid(unit)
        if parent:
            signal_pid(parent, signal.SIGTERM, None)
        elif child:
            signal_pid(child, signal.SIGTERM, None)
        pids = [p for p in (parent, child) if p]
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(alive(p) for p in pids):
            time.sleep(0.02)
        left = [p for p in pids if alive(p)]
        if left:
            freeze_and_kill(left)
        proc = self.procs.pop(unit, None)
        if proc is not None:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass

    def start(self) -> str:
        for unit in UNITS:
            self.start_unit(unit)
        return self.settled()

    def stop(self) -> None:
        for unit in UNITS:
            self._stop_unit(unit)
        for unit in UNITS:  # keepalived removes its addresses on SIGTERM; make sure
            for cidr, dev in ((LAN, "eth0"), (SRV, "eth2")):
                ip("addr", "del", cidr, "dev", dev, ns=unit_ns(unit), check=False)

    def settled(self) -> str:
        settle = max(1.0, 3 * self.profile.interval + 0.1)
        seen: list = [None, 0.0]

        def one_master():
            for unit in UNITS:
                if not self.running(unit):
                    raise LabError(
                        f"keepalived in {unit_ns(unit)} is not running:\n{self.log_tail(unit)}"
                    )
            master = None
            for unit in UNITS:
                if (
                    held(unit) == SHARED
                    and not held(other(unit))
                    and self.state(unit) == {"MASTER"}
                    and self.state(other(unit)) == {"BACKUP"}
                ):
                    master = unit
            now = time.monotonic()
            if master != seen[0]:
                seen[:] = [master, now]
            return master if master and now - seen[1] >= settle else None

        try:
            return wait_for(one_master, SETTLE_TIMEOUT, what="keepalived pair settled")
        except LabTimeout as e:
            tails = "\n".join(
                f"{u}: held {sorted(held(u))} state {sorted(self.state(u))}\n{self.log_tail(u)}"
                for u in UNITS
            )
            raise LabTimeout(f"{e}\n{tails}") from None

    def fault(self, name: str, unit: str) -> None:
        self.signalled = self.pids(unit)  # heal() lets them finish exiting first
        inject(name, self, unit)

    # The lab's faults by the names its table calls: process faults on keepalived, link faults
    # the lab's own.
    def crash(self, unit: str) -> None:
        pids = self.pids(unit)  # as Lab.crash: frozen first, so nothing reacts to the links
        for pid in pids:
            signal_pid(pid, signal.SIGSTOP, None)
        all_links_down(unit)
        freeze_and_kill(pids)

    def kill(self, unit: str) -> None:
        freeze_and_kill(self.pids(unit))

    def term(self, unit: str) -> None:
        pid = self.parent_pid(unit)
        if not pid or not signal_pid(pid, signal.SIGTERM, None):
            raise LabError(f"keepalived in {unit_ns(unit)}: no parent to SIGTERM")

    def link_down(self, unit: str, iface: str) -> None:
        self.lab.link_down(unit, iface)

    def pull_cable(self, unit: str, iface: str) -> None:
        self.lab.pull_cable(unit, iface)

    def heal(self) -> str:
        if self.signalled:  # a SIGTERMed keepalived takes a moment to exit
            pids, self.signalled = self.signalled, []
            try:
                wait_for(
                    lambda: not any(alive(p) for p in pids), 10, what=f"keepalived {pids} exit"
                )
            except LabTimeout:
                pass  # still running: start_unit() below sees it as running, settled() decides
        self.lab.heal(timeout=SETTLE_TIMEOUT)  # no carpool unit is wanted: links up only
        for unit in UNITS:
            if not self.running(unit):
                self._stop_unit(unit)
                self.lab._power_on(unit)  # a crashed/killed unit keeps the addresses
                self.start_unit(unit)
        return self.settled()

    def log_tail(self, unit: str, lines: int = 15) -> str:
        try:
            text = (self.dir / f"keepalived-{unit}.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


# -- one run ----------------------------------------------------------------------------------
@dataclass
class Run:
    profile: str
    fault: str
    impl: str
    index: int
    master: str = ""
    outage: float | None = None  # s: longest reply gap ending after the fault
    gaps: int = 0  # reply gaps after the fault
    lost: float = 0.0  # s: all gaps after the fault together
    takeover: float | None = None  # s: fault -> the other unit seen holding the addresses
    recovered: bool = True  # the client got replies again before the probe ended
    vip_stays: list[str] = field(default_factory=list)  # addresses left on the faulted unit
    note: str = ""
    valid: bool = True


def analyse(run: Run, data: dict, t_fault: float) -> None:
    interval = data["interval"]
    gaps = [(s, e) for s, e in data["gaps"] if e > t_fault]
    last = data["last_reply"]
    if last is None:
        run.valid, run.note = False, "the VIP never answered the probe"
        return
    if last < data["end"] - max(3 * interval, 0.05):  # still silent when the probe stopped
        if last < t_fault - 0.05:
            run.valid, run.note = False, "no reply in the 50 ms before the fault"
            return
        gaps.append((last, data["end"]))
        run.recovered = False
    if gaps and gaps[0][0] < t_fault - 0.05:
        run.valid, run.note = False, f"silent {t_fault - gaps[0][0]:.3f}s before the fault"
        return
    run.gaps = len(gaps)
    run.lost = round(sum(e - s for s, e in gaps), 4)
    run.outage = round(max((e - s for s, e in gaps), default=0.0), 4)


def one_run(lab: Lab, pair, profile: Profile, fault: str, index: int, workdir: Path) -> Run:
    run = Run(profile.name, fault, pair.name, index)
    master = pair.settled()
    run.master = master
    survivor = other(master)
    stop_file = workdir / "probe.stop"
    stop_file.unlink(missing_ok=True)
    duration = BASELINE + profile.deadline + profile.tail + 5.0
    probe = lab.spawn(
        CLIENT,
        [
            lab.python(),
            "-m",
            "carpool.lab.probe",
            "--target",
            VIP,
            "--interval",
            str(PROBE_INTERVAL),
            "--duration",
            f"{duration:g}",
            "--stop-file",
            str(stop_file),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(BASELINE)
        t_fault = time.monotonic()
        pair.fault(fault, master)
        deadline = t_fault + profile.deadline
        while time.monotonic() < deadline:
            if held(survivor) == SHARED:
                run.takeover = round(time.monotonic() - t_fault, 3)
                break
            time.sleep(0.02 if profile.fast else 0.05)
        time.sleep(profile.tail)
        if fault != "crash":  # a crashed unit is off: what it "holds" reaches nobody
            run.vip_stays = sorted(held(master))
        stop_file.touch()
        out, err = probe.communicate(timeout=duration + 10)
    finally:
        if probe.poll() is None:
            probe.kill()
            probe.wait(timeout=5)
    try:
        data = json.loads(out)
    except ValueError:
        run.valid, run.note = False, f"probe output unreadable: {out[-200:]!r} {err[-300:]!r}"
        return run
    analyse(run, data, t_fault)
    notes = [run.note] if run.note else []
    if run.takeover is None:
        notes.append(f"no takeover within {profile.deadline:g}s")
    if run.vip_stays:
        notes.append("VIP stays on the faulted unit")
    if not run.recovered:
        notes.append("client not answered at the end")
    run.note = "; ".join(notes)
    return run


# -- idle CPU ---------------------------------------------------------------------------------
def idle_cpu(pair, seconds: float) -> dict:
    master = pair.settled()
    pids = {u: pair.pids(u) for u in UNITS}
    start = {p: cpu_ticks(p) for ps in pids.values() for p in ps}
    t0 = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - t0
    result = {"seconds": round(elapsed, 1)}
    for unit, ps in pids.items():
        ticks = 0
        for p in ps:
            now = cpu_ticks(p)
            if now is None or start[p] is None:
                raise LabError(
                    f"{pair.name} process {p} of unit {unit} died during the idle CPU window"
                )
            ticks += now - start[p]
        role = "master" if unit == master else "backup"
        result[role] = {
            "unit": unit,
            "pids": ps,
            "cpu_percent": round(100 * ticks / CLK_TCK / elapsed, 3),
        }
    return result


# -- the benchmark ----------------------------------------------------------------------------
def cell_runs(lab, pair, profile, fault, runs, workdir, results) -> None:
    done = attempts = 0
    while done < runs and attempts < runs + 3:
        attempts += 1
        try:
            run = one_run(lab, pair, profile, fault, done + 1, workdir)
        except LabError as e:
            run = Run(
                profile.name,
                fault,
                pair.name,
                done + 1,
                valid=False,
                note=f"lab error: {str(e).splitlines()[0]}",
            )
            log(f"  lab error, details:\n{e}")
        log(
            f"  {profile.name:7} {fault:5} {pair.name:10} #{run.index} master {run.master or '?'}"
            f" outage {fmt(run.outage)} takeover {fmt(run.takeover)}"
            f"{' INVALID' if not run.valid else ''} {run.note}"
        )
        results.append(run)
        if run.valid:
            done += 1
        try:
            pair.heal()
        except LabError as e:
            log(f"  heal failed, restarting the pair: {e}")
            pair.stop()
            lab.heal(timeout=SETTLE_TIMEOUT, wait=False)
            pair.start()


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def summarise(results: list[Run]) -> list[dict]:
    rows = []
    keys = []
    for r in results:
        if (r.profile, r.fault, r.impl) not in keys:
            keys.append((r.profile, r.fault, r.impl))
    for key in keys:
        runs = [r for r in results if (r.profile, r.fault, r.impl) == key and r.valid]
        outages = [r.outage for r in runs if r.outage is not None]
        notes = {}
        for r in runs:
            for note in filter(None, r.note.split("; ")):
                notes[note] = notes.get(note, 0) + 1
        rows.append(
            {
                "profile": key[0],
                "fault": key[1],
                "impl": key[2],
                "n": len(outages),
                "median": statistics.median(outages) if outages else None,
                "min": min(outages) if outages else None,
                "max": max(outages) if outages else None,
                "takeover_median": statistics.median([r.takeover for r in runs if r.takeover])
                if any(r.takeover for r in runs)
                else None,
                "notes": {k: v for k, v in notes.items()},
            }
        )
    for row in rows:
        if row["impl"] != "carpool":
            continue
        peer = next(
            (
                r
                for r in rows
                if r["impl"] == "keepalived"
                and (r["profile"], r["fault"]) == (row["profile"], row["fault"])
            ),
            None,
        )
        row["ratio"] = (
            float(f"{row['median'] / peer['median']:.3g}")
            if peer and row["median"] is not None and peer["median"]
            else None
        )
        target = TARGETS.get((row["profile"], row["fault"]))
        if target is not None and row["max"] is not None:
            ok = row["max"] <= target
            if row["fault"] == "crash" and peer and peer["median"] is not None:
                ok = ok and row["median"] <= peer["median"]
            row["target"] = (
                f"{'met' if ok else 'MISSED'} (max <= {target:g}s"
                + (", median <= keepalived" if row["fault"] == "crash" else "")
                + ")"
            )
    return rows


def table(rows: list[dict], cpu: dict) -> str:
    head = (
        "| profile | fault | implementation | n | median s | min s | max s | "
        "carpool/keepalived (median) | notes |"
    )
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        notes = [f"{k} ({v}/{r['n']})" for k, v in r["notes"].items()]
        if r.get("target"):
            notes.insert(0, f"target {r['target']}")
        ratio = r.get("ratio")
        lines.append(
            f"| {r['profile']} | {r['fault']} | {r['impl']} | {r['n']} | "
            f"{fmt(r['median'])} | {fmt(r['min'])} | {fmt(r['max'])} | "
            f"{'' if r['impl'] != 'carpool' else ('-' if ratio is None else ratio)} | "
            f"{'; '.join(notes)} |"
        )
    if cpu:
        lines += [
            "",
            "| idle CPU (% of one core) | profile | master unit | backup unit | window s |",
            "|---|---|---|---|---|",
        ]
        for key, value in cpu.items():
            impl, prof = key.split("/")
            lines.append(
                f"| {impl} | {prof} | {value['master']['cpu_percent']:.2f} | "
                f"{value['backup']['cpu_percent']:.2f} | {value['seconds']} |"
            )
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--runs", type=int, default=7, help="runs per (profile, fault, implementation)")
    p.add_argument("--quick", action="store_true", help="3 runs, 5 s idle CPU window")
    p.add_argument("--profiles", default="default,fast")
    p.add_argument(
        "--family", type=int, choices=(4, 6), default=4, help="the shared addresses measured"
    )
    p.add_argument("--faults", default=",".join(FAULTS))
    p.add_argument("--impls", default=",".join(IMPLS))
    p.add_argument(
        "--fast-interval-ms",
        type=int,
        default=20,
        help="advert interval of the fast profile (carpool ha.fast_interval_ms, "
        "keepalived advert_int)",
    )
    p.add_argument(
        "--cpu-seconds",
        type=float,
        default=20.0,
        help="idle CPU window (0: skip); measured at default timers, and at fast",
    )
    p.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="FILE",
        help="also write every run and the summary as JSON (FILE, or - for stdout "
        "instead of the table)",
    )
    p.add_argument(
        "--logs", metavar="DIR", help="keep the daemons' logs (carpool and keepalived) in DIR"
    )
    p.add_argument(
        "--lock-timeout", type=float, default=3600, help="s to wait for the machine's lab lock"
    )
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        p.error("needs root (network namespaces)")
    if args.quick:
        args.runs, args.cpu_seconds = min(args.runs, 3), min(args.cpu_seconds, 5.0)
    if not 1 <= args.runs <= 100:
        p.error("--runs must be 1..100")
    if args.fast_interval_ms % 10 or not 10 <= args.fast_interval_ms <= 990:
        p.error("--fast-interval-ms: a multiple of 10 in 10..990 (VRRPv3 centiseconds)")
    use_family(args.family)
    profs = profiles(args.fast_interval_ms)
    wanted_profiles = [x for x in args.profiles.split(",") if x]
    wanted_faults = [x for x in args.faults.split(",") if x]
    wanted_impls = [x for x in args.impls.split(",") if x]
    for value, allowed in (
        (wanted_profiles, profs),
        (wanted_faults, FAULTS),
        (wanted_impls, IMPLS),
    ):
        bad = set(value) - set(allowed)
        if bad:
            p.error(f"unknown {sorted(bad)}: choose from {', '.join(allowed)}")
    if "keepalived" in wanted_impls and not shutil.which("keepalived"):
        p.error("keepalived is not installed (make install)")

    results: list[Run] = []
    cpu: dict = {}
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="carpool-bench-", dir="/run"))
    log(f"waiting for the lab lock (up to {args.lock_timeout:g}s)")
    with machine_lock(timeout=args.lock_timeout):
        log("lab lock held; building the lab")
        lab = Lab()
        pair = None
        try:
            lab.up(start_units=False)
            for pname in wanted_profiles:
                profile = profs[pname]
                for impl in wanted_impls:
                    pair = (
                        CarpoolPair(lab, profile)
                        if impl == "carpool"
                        else KeepalivedPair(lab, profile, workdir)
                    )
                    log(f"{pname}: starting the {impl} pair")
                    pair.start()
                    if args.cpu_seconds > 0:
                        cpu[f"{impl}/{pname}"] = idle_cpu(pair, args.cpu_seconds)
                        log(f"  idle CPU {cpu[f'{impl}/{pname}']}")
                    for fault in wanted_faults:
                        cell_runs(lab, pair, profile, fault, args.runs, workdir, results)
                    pair.stop()
                    pair = None
        finally:
            if pair is not None:
                try:
                    pair.stop()
                except LabError as e:
                    log(f"stopping the pair failed: {e}")
            lab.down()
            if args.logs:
                keep = Path(args.logs)
                keep.mkdir(parents=True, exist_ok=True)
                for path in [*workdir.glob("keepalived-*/*.log"), *lab.dir.glob("*/carpool.log")]:
                    shutil.copy(path, keep / f"{path.parent.name}-{path.name}")
            shutil.rmtree(workdir, ignore_errors=True)
    runtime = time.monotonic() - started
    rows = summarise(results)
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "runtime_s": round(runtime, 1),
        "machine": {
            "cpus": os.cpu_count(),
            "kernel": platform.release(),
            "python": platform.python_version(),
            "keepalived": _keepalived_version(),
        },
        "options": {
            "runs": args.runs,
            "family": args.family,
            "vip": VIP,
            "fast_interval_ms": args.fast_interval_ms,
            "probe_interval": PROBE_INTERVAL,
            "cpu_seconds": args.cpu_seconds,
        },
        "summary": rows,
        "idle_cpu": cpu,
        "runs": [asdict(r) for r in results],
    }
    if args.json and args.json != "-":
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    if args.json == "-":
        json.dump(report, sys.stdout, indent=2)
        print()
    else:
        print(table(rows, cpu))
        print(
            f"\n{report['date']}, IPv{args.family} ({VIP}), runtime {runtime:.0f} s, "
            f"{os.cpu_count()} CPUs, "
            f"kernel {platform.release()}, {report['machine']['keepalived']}"
        )
    return 0


def _keepalived_version() -> str | None:
    if not shutil.which("keepalived"):
        return None
    proc = subprocess.run(["keepalived", "--version"], capture_output=True, text=True)
    return ((proc.stdout or proc.stderr).splitlines() or [None])[0]


if __name__ == "__main__":
    sys.exit(main())
