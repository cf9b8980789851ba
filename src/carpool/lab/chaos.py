"""`carpool lab chaos`: a campaign of random faults on the lab, reproducible from its seed, with
the invariants of DESIGN §10 checked from outside the daemons (carpool.lab.invariants).

    result = run_campaign(Lab(), faults=15, seed=7, fast=True, report_dir="chaos-report")

plan() draws the whole fault sequence from random.Random(seed) before anything runs (kinds,
targets as "active"/"standby", paths, hold times, combinations, config changes), so the same
seed gives the same campaign; which unit "active" names is resolved when the fault comes. The
run: the sampler (carpool.lab.sampler) and an ICMP probe of the shared LAN address run in the
client namespace; a canary first holds the shared address on the standby by hand for longer
than I1 allows (the checker must flag exactly that window, or the campaign fails); then each
fault is injected, held, healed (or combined with the next one), and once the pair settles
both units' configuration is read for I4. Everything is checked when the run ends.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from . import invariants as inv
from .faults import ALL_CUT, FAULTS, Target, partner
from .ns import LabError, wait_for
from .sampler import held_intervals
from .topology import CLIENT, SHARED_LAN, SHARED_LAN6, SHARED_SRV, SHARED_SRV6, UNITS, unit_ns

# IPv4 first: the probe and the canary use SHARED[0]; the IPv6 ones are judged alike
SHARED = [c.split("/")[0] for c in (SHARED_LAN, SHARED_SRV, SHARED_LAN6, SHARED_SRV6)]
LINKS = dict(zip(SHARED, ("eth0", "eth2", "eth0", "eth2"), strict=True))  # where each lives
CHANNELS = tuple(ALL_CUT)
CHAOS = {name: f.chaos for name, f in FAULTS.items() if f.chaos}  # the kinds drawn, in order
WEIGHTS = {kind: c.weight for kind, c in CHAOS.items()}
HOLD = {False: (1.0, 6.0), True: (0.3, 2.5)}  # seconds a fault lasts, by profile (fast?)
P_COMBINE, P_CONFIG = 0.2, 0.3


# -- the plan (pure) --------------------------------------------------------------------------
def _role(rng: random.Random, target: Target) -> str | None:
    """The role of the unit a fault hits: 70 % the one its target aims at. The first draw is
    made for every fault, on a unit or not, as it always was: a seed keeps its plan."""
    role = "active" if rng.random() < 0.7 else "standby"
    if target.unit is None:
        return None
    if target.aim == "standby":
        return "standby" if rng.random() < 0.7 else "active"
    return role


def plan(faults: int, seed: int, fast: bool = False, vmac: bool = False) -> list[dict]:
    """The campaign's steps, from the seed alone."""
    rng = random.Random(seed)
    kinds = [k for k, c in CHAOS.items() if vmac or not c.vmac]
    weights = [WEIGHTS[k] for k in kinds]
    lo, hi = HOLD[fast]
    steps = []
    for i in range(faults):
        kind = rng.choices(kinds, weights)[0]
        role = _role(rng, FAULTS[kind].target)
        args = CHAOS[kind].draw(rng)
        steps.append(
            {
                "n": i + 1,
                "kind": kind,
                "role": role,
                "args": args,
                "hold": round(rng.uniform(lo, hi), 3),
                "config_change": rng.random() < P_CONFIG,
                "combine": i + 1 < faults and rng.random() < P_COMBINE,
            }
        )
    return steps


# -- the run ----------------------------------------------------------------------------------
class Campaign:
    def __init__(
        self,
        lab,
        faults: int,
        seed: int,
        fast: bool,
        workdir: Path,
        say: Callable[[str], None] = print,
    ):
        self.lab, self.seed, self.fast, self.dir, self.say = lab, seed, fast, workdir, say
        self.steps = plan(faults, seed, fast, bool(lab.options.get("vmac")))
        self.log: list[dict] = []  # the fault log (invariants.facts reads it)
        self.created: list[dict] = []  # every config version made during the run
        self.snapshots: list[dict] = []  # after each heal, for I4
        self.canaries: list[dict] = []
        self.procs: dict[str, subprocess.Popen] = {}
        self.stop_file = self.dir / "stop"
        self.bounds: inv.Bounds | None = None  # run() sets them from the master's timers

    @property
    def run_bounds(self) -> inv.Bounds:
        """The bounds of this run: only once run() has set them."""
        if self.bounds is None:
            raise RuntimeError("chaos: no bounds before run() read the master's timers")
        return self.bounds

    # helpers ---------------------------------------------------------------------------------
    def request(self, unit: str, command: str, timeout: float = 5.0, **fields) -> dict:
        from ..node import control

        try:
            return control.request(
                str(self.lab.socket_path(unit)), command, timeout=timeout, **fields
            )
        except (OSError, ValueError) as e:
            return {"error": f"no answer: {e}"}

    def active(self) -> str:
        states = self.lab.states()
        masters = [u for u, s in states.items() if s == "master"]
        return masters[0] if len(masters) == 1 else "a"

    def holders_now(self) -> dict[str, list[str]]:
        """The sampler's latest view: address -> units holding it."""
        state: dict[tuple[str, str], bool] = {}
        for line in self._sampler_lines():
            if line.get("ev") == "held":
                state[(line["unit"], line["addr"])] = line["held"]
        return {a: sorted(u for u in UNITS if state.get((u, a))) for a in SHARED}

    def _sampler_lines(self) -> list[dict]:
        lines: list[dict] = []
        try:
            text = (self.dir / "sampler.jsonl").read_text()
        except OSError:
            return lines
        for raw in text.splitlines():
            try:
                lines.append(json.loads(raw))
            except ValueError:
                pass  # a line being written
        return lines

    def change_config(self, unit: str, fault_id: int | None, text: str) -> None:
        answer = self.request(
            unit, "config.set", key="appliance.description", value=text, who="chaos"
        )
        entry = {"unit": unit, "t": time.monotonic(), "fault": fault_id, "text": text}
        if "error" in answer:
            entry["error"] = answer["error"]
        else:
            self.created.append(
                {
                    "version": answer["version"],
                    "hash": answer["hash"],
                    "unit": unit,
                    "t": entry["t"],
                    "fault": fault_id,
                }
            )
            entry["version"] = answer["version"]
        if fault_id is not None:
            self.log[-1].setdefault("config_changes", []).append(entry)

    # start / stop ----------------------------------------------------------------------------
    def start_observers(self, duration: float) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.stop_file.unlink(missing_ok=True)
        py = self.lab.python()
        out = open(self.dir / "sampler.jsonl", "w")  # noqa: SIM115 (the process writes it after this block)
        self.procs["sampler"] = self.lab.spawn(
            CLIENT,
            [
                py,
                "-m",
                "carpool.lab.sampler",
                *[f"--unit={u}={unit_ns(u)}" for u in UNITS],
                *[f"--addr={a}" for a in SHARED],
                "--period",
                "0.01",
                "--duration",
                str(duration),
                "--stop-file",
                str(self.stop_file),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        out.close()
        wait_for(
            lambda: (
                any(ln.get("ev") == "tick" for ln in self._sampler_lines()) or self._died("sampler")
            ),
            10,
            what="the sampler runs",
        )
        out = open(self.dir / "probe.json", "w")  # noqa: SIM115 (the process writes it after this block)
        self.procs["probe"] = self.lab.spawn(
            CLIENT,
            [
                py,
                "-m",
                "carpool.lab.probe",
                "--target",
                SHARED[0],
                "--interval",
                "0.005",
                "--duration",
                str(duration),
                "--stop-file",
                str(self.stop_file),
            ],
            stdout=out,
            stderr=subprocess.DEVNULL,
        )
        out.close()

    def _died(self, name: str) -> bool:
        proc = self.procs[name]
        if proc.poll() is not None:
            raise LabError(f"chaos: the {name} exited ({proc.returncode}); see {self.dir}")
        return False

    def stop_observers(self) -> None:
        self.stop_file.touch()
        for _name, proc in self.procs.items():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)

    # the canary ------------------------------------------------------------------------------
    def canary(self) -> None:
        """The standby holds the shared LAN address by hand, fence and all, for 3x the I1
        bound (at least half a second): a real double holder the checker must flag."""
        standby = partner(self.active())
        addr, cidr = SHARED[0], SHARED_LAN
        hold = max(3 * self.run_bounds.overlap, 0.5)
        has_fence = (
            self.lab.exec(standby, ["nft", "list", "set", "ip", "carpool_fence", "live"]).returncode
            == 0
        )
        start = time.monotonic()
        self.lab.exec(standby, ["ip", "addr", "add", cidr, "dev", "eth0"], check=True)
        if has_fence:
            self.lab.exec(
                standby,
                [
                    "nft",
                    "add",
                    "element",
                    "ip",
                    "carpool_fence",
                    "live",
                    f"{{ {addr} timeout {int(hold * 1000) + 5000}ms }}",
                ],
            )
        time.sleep(hold)
        self.lab.exec(standby, ["ip", "addr", "del", cidr, "dev", "eth0"], check=True)
        if has_fence:
            self.lab.exec(
                standby,
                ["nft", "delete", "element", "ip", "carpool_fence", "live", f"{{ {addr} }}"],
            )
        self.canaries.append(
            {
                "unit": standby,
                "address": addr,
                "start": start,
                "end": time.monotonic(),
                "fence": has_fence,
            }
        )
        time.sleep(2 * self.run_bounds.overlap)

    # one fault -------------------------------------------------------------------------------
    def inject(self, step: dict) -> dict:
        kind, args = step["kind"], dict(step["args"])
        fault, chaos = FAULTS[kind], CHAOS[kind]
        unit = None
        if step["role"]:
            active = self.active()
            unit = active if step["role"] == "active" else partner(active)
            args[fault.target.unit] = unit
        entry = {
            "id": step["n"],
            "kind": kind,
            "unit": unit,
            "role": step["role"],
            "params": {k: v for k, v in args.items() if k != fault.target.unit},
            "hold": step["hold"],
            "effect": fault.effect(args),
        }
        self.log.append(entry)
        load = self._start_load(step) if chaos.load else None
        entry["inject"] = time.monotonic()
        self.lab.struck_at = None
        try:
            result = fault.inject(self.lab, args)
        except LabError as e:
            # Kept in force: a fault that failed half way (a reboot whose start failed) did
            # act, and one that could not start (no daemon to kill) finds the unit dead anyway.
            entry["error"] = str(e).splitlines()[0]
            self.say(
                f"  #{step['n']} {kind}{' ' + unit if unit else ''}: failed ({entry['error']})"
            )
            return entry
        if self.lab.struck_at:  # the first signal, after finding the processes
            entry["inject"] = self.lab.struck_at
        entry.update(chaos.log(result, args))
        if load:
            entry["_load"] = load
        self.say(
            f"  #{step['n']} {kind}{' ' + unit if unit else ''}"
            f"{' ' + json.dumps(entry['params']) if entry['params'] else ''}"
        )
        if chaos.split:  # both sides take over, then each makes its own change
            try:
                wait_for(
                    lambda: set(self.lab.states().values()) == {"master"},
                    self.run_bounds.takeover + 3,
                    what="both sides of the partition active",
                )
            except LabError as e:
                entry["note"] = str(e)
            for u in UNITS:
                self.change_config(u, step["n"], f"chaos {step['n']} partition side {u}")
        return entry

    def _start_load(self, step: dict) -> subprocess.Popen:
        out = open(self.dir / f"load-{step['n']}.json", "w")  # noqa: SIM115 (the process writes it after this block)
        proc = self.lab.spawn(
            CLIENT,
            [
                self.lab.python(),
                "-m",
                "carpool.lab.keepalive",
                f"http://{SHARED[0]}:80/",
                "--connections",
                "2",
                "--pause",
                "0.01",
                "--duration",
                str(step["hold"] + 60),
                "--stop-file",
                str(self.dir / f"load-{step['n']}.stop"),
            ],
            stdout=out,
            stderr=subprocess.DEVNULL,
        )
        out.close()
        return proc

    def heal(self, group: list[dict]) -> None:
        """Lab.heal() in its steps, timed, so the invariants know when the units were joined
        again (switch, links) and when each restarted daemon was live again (out of init)."""
        lab = self.lab
        t0 = time.monotonic()
        lab.thaw()  # a frozen daemon is live again from here
        restart = [u for u in UNITS if u in lab.wanted and not lab.unit_running(u)]
        live_again: dict[str, float] = {}
        try:
            lab.heal(wait=False)  # switch, links (after a crash's power-on), restarts
            joined = time.monotonic()
            self._wait_live(restart, live_again)
            lab.wait_for_master(lab.default_timeout() + 10)
            outcome = "healed"
        except LabError as e:
            joined = joined if "joined" in locals() else time.monotonic()
            outcome = f"heal failed: {str(e).splitlines()[0]}"
        for entry in group:
            if entry.get("skipped"):
                continue
            entry["heal"] = joined
            thawed = CHAOS[entry["kind"]].thawed
            entry["live_again"] = {
                u: live_again.get(u, t0 if thawed else joined)
                for u in entry["effect"].get("dead", [])
            }
        settled, incidents = self.settle()
        for entry in group:
            entry["outcome"] = outcome if settled else f"{outcome}; not settled"
            if incidents:
                entry["incidents"] = incidents
            entry["healed_in"] = round(time.monotonic() - t0, 3)
            load = entry.pop("_load", None)
            if load is not None:
                (self.dir / f"load-{entry['id']}.stop").touch()
                try:
                    load.wait(timeout=15)
                    entry["load"] = _load_result(self.dir / f"load-{entry['id']}.json")
                except subprocess.TimeoutExpired:
                    load.kill()
        self.snapshot(group[-1]["id"])

    def _wait_live(self, units: list[str], seen: dict[str, float]) -> None:
        """Poll restarted units until their daemon has left init (it answers before it can
        take anything over): the moment each is live again."""
        for unit in units:

            def live(unit: str = unit) -> bool:
                return self.lab.unit_status(unit, timeout=0.5).get("state") not in (None, "init")

            wait_for(
                live,
                20,
                interval=0.02,
                what=f"unit {unit} live",
            )
            seen[unit] = time.monotonic()

    def settle(self) -> tuple[bool, list[str]]:
        """Until one master and the same version on both (bounded). A unit found not running
        although the campaign wants it (it died after its restart) is reported and healed
        once more, so one incident does not spoil the rest of the run."""
        incidents = []
        for _ in range(2):
            dead = [u for u in UNITS if u in self.lab.wanted and not self.lab.unit_running(u)]
            if not dead:
                break
            incidents.append(
                f"unit(s) {', '.join(dead)} not running after the heal; "
                f"log: {self.lab.log_tail(dead[0], 3).replace(chr(10), ' | ')}"
            )
            self.say(f"  ! {incidents[-1]}")
            try:
                self.lab.heal(timeout=self.lab.default_timeout() + 10)
            except LabError:
                pass

        def same():
            shows = {u: self.request(u, "config.show") for u in UNITS}
            versions = {(s.get("version"), s.get("hash")) for s in shows.values()}
            return (
                self.lab.master() is not None
                and len(versions) == 1
                and None not in next(iter(versions))
            )

        try:
            wait_for(same, 30.0, interval=0.2, what="one master, one version")
        except LabError:
            return False, incidents
        time.sleep(self.run_bounds.overlap + 0.05)  # the sampler sees what settled
        return True, incidents

    def snapshot(self, fault_id: int | None) -> None:
        config, history = {}, {}
        for u in UNITS:
            show = self.request(u, "config.show")
            config[u] = (
                None if "error" in show else {"version": show["version"], "hash": show["hash"]}
            )
            hist = self.request(u, "config.history")
            history[u] = (
                []
                if "error" in hist
                else [
                    {"version": r["version"], "hash": r["hash"], "conflict": r.get("conflict", "")}
                    for r in hist["history"]
                ]
            )
        self.snapshots.append(
            {
                "t": time.monotonic(),
                "fault": fault_id,
                "holders": self.holders_now(),
                "config": config,
                "history": history,
                "created": len(self.created),
            }
        )

    # the whole run ---------------------------------------------------------------------------
    def run(self) -> dict:
        lab = self.lab
        master = lab.wait_for_master()
        timers = lab.unit_status(master).get("timers", {})
        advert = float(timers.get("advert_interval") or lab.advert_interval())
        master_down = float(timers.get("master_down") or 3 * advert)
        # fast: the targets are 100 ms for both windows (sampling included)
        self.bounds = inv.Bounds(
            advert=advert,
            master_down=master_down,
            sample=0.02,
            takeover_margin=0.4 if self.fast else 1.5,
            floor=0.08 if self.fast else 0.0,
        )
        per_fault = HOLD[self.fast][1] + 45
        self.start_observers(duration=min(120 + per_fault * len(self.steps), 6 * 3600))
        start = time.monotonic()
        try:
            self.say(
                f"chaos: seed {self.seed}, {len(self.steps)} faults, "
                f"{'fast' if self.fast else 'default'} profile (advert {advert:g}s, "
                f"master down {master_down:g}s); canary first"
            )
            self.canary()
            self.change_config(self.active(), None, "chaos start")
            group: list[dict] = []
            for step in self.steps:
                entry = self.inject(step)
                group.append(entry)
                if (
                    step["config_change"]
                    and not entry.get("error")
                    and not CHAOS[step["kind"]].split
                ):
                    time.sleep(step["hold"] / 2)
                    active = [u for u, s in lab.states().items() if s == "master"]
                    if len(active) == 1:
                        self.change_config(active[0], step["n"], f"chaos {step['n']}")
                    time.sleep(step["hold"] / 2)
                elif not entry.get("error"):
                    time.sleep(step["hold"])
                if not step["combine"]:
                    self.heal(group)
                    group = []
            if group:
                self.heal(group)
        finally:
            end = time.monotonic()
            self.stop_observers()
            for unit in UNITS:  # the units' side of the story, next to the report
                try:
                    shutil.copy(lab.log_path(unit), self.dir / f"unit-{unit}.log")
                except OSError:
                    pass
        return self.analyse(start, end)

    def analyse(self, start: float, end: float) -> dict:
        bounds = self.run_bounds
        lines = self._sampler_lines()
        held = held_intervals(lines, end)
        surely = held_intervals(lines, end, surely=True)
        violations = inv.check_timeline(
            held,
            self.log,
            UNITS,
            SHARED,
            CHANNELS,
            bounds,
            start,
            end,
            self.canaries,
            LINKS,
            held_surely=surely,
        )
        created_upto = []
        for snap in self.snapshots:
            created_upto = self.created[: snap["created"]]
            violations += inv.check_heal(snap, created_upto)
        violations.sort(key=lambda v: (v.start, v.invariant))
        probe = _json_file(self.dir / "probe.json") or {}
        gaps = [tuple(g) for g in probe.get("gaps", [])]
        outage = inv.outages(self.log, gaps, end)
        for entry in self.log:
            entry["outage"] = outage.get(entry["id"])
        canary = [inv.canary_verdict(violations, c, bounds) for c in self.canaries]
        real = [v for v in violations if not v.canary]
        ticks = [ln for ln in lines if ln.get("ev") == "tick"]
        return {
            "seed": self.seed,
            "fast": self.fast,
            "faults": len(self.steps),
            "command": f"carpool lab chaos --faults {len(self.steps)} --seed {self.seed}"
            f"{' --fast' if self.fast else ''}",
            "start": start,
            "end": end,
            "duration": round(end - start, 3),
            "bounds": {
                "advert": bounds.advert,
                "master_down": bounds.master_down,
                "overlap": bounds.overlap,
                "stale": bounds.stale,
                "takeover": bounds.takeover,
                "sample": bounds.sample,
            },
            "log": self.log,
            "created": self.created,
            "snapshots": self.snapshots,
            "canaries": [
                c | {"caught": ok, "verdict": why}
                for c, (ok, why) in zip(self.canaries, canary, strict=False)
            ],
            "canary_ok": bool(canary) and all(ok for ok, _ in canary),
            "violations": [v.to_json() for v in violations],
            "violation_count": len(real),
            "summary": inv.summary(self.log, violations, outage),
            "longest": _longest(real),
            "held": {f"{u} {a}": [list(s) for s in spans] for (u, a), spans in held.items()},
            "held_surely": {
                f"{u} {a}": [list(s) for s in spans] for (u, a), spans in surely.items()
            },
            "gaps": [list(g) for g in gaps],
            "samples": {
                "count": ticks[-1]["samples"] if ticks else 0,
                "max_gap": max((t["max_gap"] for t in ticks), default=None),
                "nftables": next(
                    (ln.get("nftables") for ln in lines if ln.get("ev") == "start"), None
                ),
            },
            "probe": {k: probe.get(k) for k in ("sent", "received", "interval")},
        }


def _json_file(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text() or "null")
    except (OSError, ValueError):
        return None


def _load_result(path: Path) -> dict:
    data = _json_file(path) or {}
    conns = data.get("connections", [])
    return {
        "requests": sum(c.get("requests", 0) for c in conns),
        "failures": sum(c.get("failures", 0) for c in conns),
    }


def _longest(violations: list[inv.Violation]) -> dict:
    """The longest double-holder (I1) and stale-address (I3) windows, in seconds."""

    def top(name):
        vs = [v for v in violations if v.invariant == name]
        return round(max(v.duration for v in vs), 4) if vs else 0.0

    return {"double_holder": top("I1"), "stale_address": top("I3")}


def longest_windows(result: dict) -> dict:
    """The longest double-holder window while a channel joined the units, and the longest
    stale-address window after a unit stopped being live, whether or not beyond the bounds
    (for the long campaign's figures)."""

    def spans(key: str) -> dict:
        return {tuple(k.split(" ", 1)): [tuple(s) for s in v] for k, v in result[key].items()}

    held = spans("held")
    surely = spans("held_surely") if "held_surely" in result else held
    b = result["bounds"]
    loose = inv.Bounds(
        advert=0.0,
        master_down=b["master_down"],
        sample=0.0,
        takeover_margin=b["takeover"] - b["master_down"],
    )
    found = inv.check_timeline(
        held,
        result["log"],
        UNITS,
        SHARED,
        CHANNELS,
        loose,
        result["start"],
        result["end"],
        result["canaries"],
        LINKS,
        held_surely=surely,
    )
    real = [v for v in found if not v.canary]
    return _longest(real)


def run_campaign(
    lab=None,
    faults: int = 15,
    seed: int = 1,
    fast: bool = False,
    report_dir: str | Path | None = None,
    vmac: bool = False,
    say: Callable[[str], None] = print,
) -> dict:
    """Build (or reuse, if it runs the same profile) the lab, run the campaign, write the
    report (chaos.json, chaos.html) into report_dir (default <lab dir>/chaos); returns the
    result (see Campaign.analyse). The lab is left up and healed."""
    from .chaos_report import write_report
    from .core import Lab

    lab = lab or Lab()
    same = (
        lab.exists()
        and bool(lab.options.get("fast")) == fast
        and bool(lab.options.get("vmac")) == vmac
        and set(UNITS) <= lab.wanted
    )
    if same:
        lab.heal()
    else:
        say(f"chaos: building the lab ({'fast' if fast else 'default'} profile)")
        lab.up(fast=fast, vmac=vmac)
    workdir = Path(report_dir) if report_dir else lab.dir / "chaos"
    result = Campaign(lab, faults, seed, fast, workdir, say).run()
    write_report(result, workdir)
    return result
