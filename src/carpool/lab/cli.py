"""`carpool lab ...`: the command line of the namespace lab (carpool.cli calls add_lab_parser).

carpool lab up [--fast] [--vmac] [--servers N] [--preferred R] [--no-units] [--ipv6-only]
               [--set K=V]...
carpool lab down [--purge]
carpool lab status [--json] [--watch SECONDS]
carpool lab exec UNIT -- CMD...         (UNIT: a, b, c1, r1.., sw; cp- prefix accepted)
carpool lab fault FAULT [ARGS]          (carpool lab fault --help lists them: the table
                                         FAULTS in carpool.lab.faults)
carpool lab heal
carpool lab chaos [--faults N] [--seed S] [--fast] [--report DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import tomllib

from .core import Lab
from .faults import FAULTS
from .ns import LabError, machine_lock


def _parse_set(text: str) -> tuple[str, object]:
    """KEY=VALUE with VALUE read as TOML (so 6, true, "x", [..] work); a bare word is a string."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, not {text!r}")
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value
    return key.strip(), parsed


def _locked(func):
    """Changes to the lab wait for no one: refused while another process (a test run) holds
    the lab lock, unless --force."""

    def run(args) -> int:
        if getattr(args, "force", False):
            return func(args)
        with machine_lock(timeout=None):
            return func(args)

    return run


def cmd_up(args) -> int:
    overrides: dict = {}
    for key, value in args.set or []:
        overrides[key] = value
    lab = Lab()
    lab.up(
        fast=args.fast,
        vmac=args.vmac,
        servers=args.servers,
        preferred=args.preferred,
        start_units=not args.no_units,
        overrides=overrides or None,
        timeout=args.timeout,
        ipv6_only=args.ipv6_only,
    )
    print(format_summary(lab.summary()))
    return 0


def cmd_down(args) -> int:
    removed = Lab().down(keep_logs=not args.purge)
    print(f"removed: {', '.join(removed) or 'nothing (no lab)'}")
    return 0


def cmd_status(args) -> int:
    lab = Lab()
    if args.json:
        print(json.dumps(lab.summary(), indent=2, sort_keys=True))
        return 0
    if not args.watch:
        print(format_summary(lab.summary()))
        return 0
    try:
        while True:
            print("\033[H\033[J" + format_summary(lab.summary()), flush=True)
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return 0


def cmd_exec(args) -> int:
    argv = list(args.cmd)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise LabError("lab exec: no command given (carpool lab exec a -- CMD...)")
    full, env = Lab()._argv(args.unit, argv)
    sys.stdout.flush()
    os.execvpe(full[0], full, env)
    return 127  # not reached


def cmd_fault(args) -> int:
    lab = Lab()
    fault = FAULTS[args.fault]
    values = {dest: getattr(args, dest) for dest in fault.dests}
    result = fault.inject(lab, values)
    where = " ".join(f"{k} {v}" for k, v in values.items() if v not in (None, False))
    said = ""
    if isinstance(result, int):
        result = [result]
    if isinstance(result, list) and result and isinstance(result[0], int):
        said = f": pids {' '.join(map(str, result))}"
    elif isinstance(result, list) and result:
        said = f": {len(result)} windows"
    print(
        f"{fault.name}{' ' + where if where else ''}: done{said}; switch faults: "
        f"{', '.join(lab.switch_faults()) or 'none'}"
    )
    return 0


def cmd_chaos(args) -> int:
    from .chaos import run_campaign
    from .chaos_report import summary_table

    result = run_campaign(
        Lab(),
        faults=args.faults,
        seed=args.seed,
        fast=args.fast,
        report_dir=args.report,
        vmac=args.vmac,
        say=lambda text: print(text, flush=True),
    )
    print(summary_table(result))
    for v in result["violations"]:
        if not v["canary"]:
            print(
                f"VIOLATION {v['invariant']} at +{v['start'] - result['start']:.3f}s "
                f"(faults {v['faults']}): {v['detail']}"
            )
    for c in result["canaries"]:
        print(f"canary: {'caught' if c['caught'] else 'NOT CAUGHT'}: {c['verdict']}")
    print(
        f"{result['violation_count']} violations; longest beyond the bounds: two holders "
        f"{result['longest']['double_holder']}s, stale address "
        f"{result['longest']['stale_address']}s; report {args.report or Lab().dir / 'chaos'}"
    )
    return 0 if result["violation_count"] == 0 and result["canary_ok"] else 1


def cmd_heal(args) -> int:
    lab = Lab()
    master = lab.heal(timeout=args.timeout)
    print(f"healed; master: {master or '-'}")
    return 0


def format_summary(s: dict) -> str:
    if not s["namespaces"]:
        return f"no lab (lab dir {s['dir']}); `carpool lab up` builds one"
    o = s["options"]
    lines = [
        f"lab: {' '.join(s['namespaces'])}   (files in {s['dir']})",
        f"  profile: {'fast (vrrp3)' if o.get('fast') else 'default'}"
        f"{', vmac' if o.get('vmac') else ''}, preferred {o.get('preferred', 'none')}"
        f"{', overrides ' + json.dumps(o['overrides']) if o.get('overrides') else ''}",
    ]
    for unit, u in s["units"].items():
        if u["supervisor_pid"] is None:
            run = "not running" + (" (should be: heal restarts it)" if u["wanted"] else "")
        else:
            run = f"supervisor {u['supervisor_pid']}, daemon {u['daemon_pid'] or 'DEAD'}"
        state = (u["state"] or "-").upper()
        extra = f" ({u['reason']})" if u.get("reason") else ""
        held = f", holds {', '.join(u['shared_held'])}" if u.get("shared_held") else ""
        lines.append(f"  unit {unit}: {state}{extra}{held}; {run}")
    for ns, srv in s["servers"].items():
        lines.append(
            f"  {ns} {srv['address']}: " + (f"http pid {srv['pid']}" if srv["pid"] else "http DOWN")
        )
    if s["units"]:
        from .units import WUI_PASSWORD, WUI_USER, wui_url

        lines.append(
            "  WUI: "
            + "  ".join(
                f"{u} {wui_url(u, bool((s.get('options') or {}).get('ipv6_only')))}"
                for u in s["units"]
            )
            + f"   (user {WUI_USER}, password {WUI_PASSWORD}; self-signed certificate)"
        )
    f = s["faults"]
    down = "; ".join(f"{ns}: {', '.join(names)}" for ns, names in f["links_down"].items())
    lines.append(
        f"  faults: switch {', '.join(f['switch']) or 'none'}; links down {down or 'none'}"
    )
    return "\n".join(lines)


def _guard(func):
    def run(args) -> int:
        if os.geteuid() != 0:
            print("carpool lab: needs root (network namespaces)", file=sys.stderr)
            return 1
        try:
            return func(args) or 0
        except LabError as e:
            print(f"carpool lab: {e}", file=sys.stderr)
            return 1

    return run


def add_lab_parser(subparsers) -> argparse.ArgumentParser:
    """Register `lab ...` on an argparse subparsers object; each command sets func(args)."""
    lab = subparsers.add_parser(
        "lab", help="the network-namespace lab (root)", description=__doc__.split("\n\n")[0]
    )
    sub = lab.add_subparsers(dest="lab_command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="build the lab (an existing one is torn down first)")
    up.add_argument("--fast", action="store_true", help="fast profile (VRRPv3, 20 ms adverts)")
    up.add_argument("--vmac", action="store_true", help="shared addresses on a virtual MAC")
    up.add_argument("--servers", type=int, default=3, metavar="N", help="real servers (3)")
    up.add_argument("--preferred", choices=("none", "first", "second"), default="none")
    up.add_argument("--no-units", action="store_true", help="topology and servers only")
    up.add_argument(
        "--ipv6-only",
        action="store_true",
        help="no IPv4 on the lab's links: the units, client and servers speak IPv6 only",
    )
    up.add_argument(
        "--set",
        type=_parse_set,
        action="append",
        metavar="KEY=VALUE",
        help="config override for both units, e.g. ha.ha_timeout=6, "
        'interface.eth0.ping_target="198.18.0.100", b.unit.log_level=debug',
    )
    up.add_argument("--timeout", type=float, help="seconds to wait for one master")
    up.add_argument("--force", action="store_true", help="even if a test run holds the lab")
    up.set_defaults(func=_guard(_locked(cmd_up)))

    down = sub.add_parser("down", help="remove everything the lab made")
    down.add_argument("--purge", action="store_true", help="remove the logs too")
    down.add_argument("--force", action="store_true", help="even if a test run holds the lab")
    down.set_defaults(func=_guard(_locked(cmd_down)))

    status = sub.add_parser("status", help="namespaces, units, servers, faults")
    status.add_argument("--json", action="store_true")
    status.add_argument("--watch", type=float, metavar="SECONDS", help="refresh until Ctrl-C")
    status.set_defaults(func=_guard(cmd_status))

    ex = sub.add_parser(
        "exec",
        help="run a command in a lab namespace",
        description="Run CMD in the namespace of UNIT (a, b, c1, r1.., sw); "
        "in a unit, CARPOOL_CONFIG names its config file.",
    )
    ex.add_argument("unit", metavar="UNIT")
    ex.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD")
    ex.set_defaults(func=_guard(cmd_exec))

    fault = sub.add_parser("fault", help="inject a fault")
    faults = fault.add_subparsers(dest="fault", required=True, metavar="FAULT")
    for f in FAULTS.values():
        p = faults.add_parser(f.name, help=f.help)
        for flag, kwargs in f.arguments:
            p.add_argument(flag, **kwargs)
        p.add_argument("--force", action="store_true", help=argparse.SUPPRESS)
    fault.set_defaults(func=_guard(_locked(cmd_fault)))

    chaos = sub.add_parser(
        "chaos",
        help="a seeded campaign of random faults, invariants checked (exit 1 on any violation)",
    )
    chaos.add_argument("--faults", type=int, default=15, metavar="N")
    chaos.add_argument("--seed", type=int, default=1, metavar="S")
    chaos.add_argument("--fast", action="store_true", help="fast profile (VRRPv3, 20 ms)")
    chaos.add_argument("--vmac", action="store_true", help="a lab with the virtual MAC")
    chaos.add_argument(
        "--report",
        metavar="DIR",
        help="chaos.json and chaos.html go here (default <lab dir>/chaos)",
    )
    chaos.add_argument("--force", action="store_true", help="even if a test run holds the lab")
    chaos.set_defaults(func=_guard(_locked(cmd_chaos)))

    heal = sub.add_parser("heal", help="undo every fault, restart stopped units")
    heal.add_argument("--timeout", type=float, help="seconds to wait for one master")
    heal.add_argument("--force", action="store_true", help="even if a test run holds the lab")
    heal.set_defaults(func=_guard(_locked(cmd_heal)))
    return lab
