"""carpool command line: run, status, lab."""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time

from .config.ha import Config, ConfigError, load_config

DEFAULT_CONFIG = "/etc/carpool/carpool.toml"


def _config_path(args) -> str:
    return args.config or os.environ.get("CARPOOL_CONFIG") or DEFAULT_CONFIG


def _load(args) -> Config:
    try:
        return load_config(_config_path(args))
    except ConfigError as e:
        print(f"carpool: invalid configuration, nothing changed:\n{e}", file=sys.stderr)
        raise SystemExit(2)


def _logging(cfg: Config, who: str) -> None:
    logging.basicConfig(
        level=cfg.log_level.upper(), stream=sys.stderr,
        format=f"%(asctime)s {cfg.role} {who} %(name)s %(levelname)s %(message)s")


def cmd_run(args) -> int:
    cfg = _load(args)
    if args.worker:
        from .node.daemon import Daemon
        _logging(cfg, "daemon")
        return asyncio.run(Daemon(cfg).run())
    from .node.supervisor import supervise
    _logging(cfg, "supervisor")
    return supervise(cfg)


def _ago(seconds) -> str:
    return "never" if seconds is None else f"{seconds:.1f}s ago"


def format_status(s: dict) -> str:
    lines = [
        f"unit {s['role']}: {s['state'].upper()} for {s['since_ago'] or 0:.1f}s "
        f"({s['reason']})",
        f"  {s['protocol']} vhid {s['vhid']}  advbase {s['advbase']} advskew {s['advskew']}  "
        f"priority {s['priority']}  preempt {'yes' if s['preempt'] else 'no'}  "
        f"{s['transport']}{'  vmac ' + s['vmac'] if s['vmac'] else ''}",
        f"  demote {s['demote']}: {', '.join(s['demote_reasons']) or 'no failed checks'}",
        f"  shared held: {', '.join(s['shared_held']) or 'none'}",
        "  partner by interface:",
    ]
    for name, p in s["partner"].items():
        ping = ("ok %.2f ms" % p["ping_rtt_ms"]) if p["ping_ok"] else (
            "no answer" if p["ping_ok"] is False else "-")
        target = ""
        if p["ping_target"]:
            target = f"  target {p['ping_target']} {'ok' if p['ping_target_ok'] else 'FAILED'}"
        lines.append(
            f"    {name:<6} link {'up' if p['link_up'] else 'DOWN':<4} "
            f"{'hb ' if p['heartbeat'] else ''}partner {p['address']}: advert "
            f"{_ago(p['advert_seen_ago'])}, ping {ping}{target}")
    drops = ", ".join(f"{k} {v}" for k, v in sorted(s["drops"].items())) or "none"
    c, t = s["counters"], s["timers"]
    lines += [f"  adverts sent {c['adverts_sent']} received {c['adverts_received']} "
              f"send errors {c['send_errors']}  drops: {drops}",
              f"  timers: advert every {t['advert_interval']:.3f}s, master down after "
              f"{t['master_down']:.3f}s"]
    return "\n".join(lines)


def cmd_status(args) -> int:
    from .node import control
    cfg = _load(args)
    try:
        status = control.request(cfg.socket_path, "status")
    except (OSError, ValueError) as e:
        print(f"carpool: no daemon answers on {cfg.socket_path}: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=True))
    elif args.watch:
        try:
            while True:
                print("\033[H\033[J" + format_status(control.request(cfg.socket_path, "status")),
                      flush=True)
                time.sleep(args.watch)
        except KeyboardInterrupt:
            return 0
    else:
        print(format_status(status))
    return 0


def cmd_check(args) -> int:
    cfg = _load(args)
    print(f"{cfg.path}: valid ({cfg.protocol}, vhid {cfg.vhid}, unit {cfg.role}, "
          f"{len(cfg.interfaces)} interfaces)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="carpool", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the unit daemon")
    run.add_argument("--config", help=f"TOML file (default $CARPOOL_CONFIG or {DEFAULT_CONFIG})")
    run.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    run.set_defaults(func=cmd_run)
    status = sub.add_parser("status", help="show this unit's HA state")
    status.add_argument("--config")
    status.add_argument("--json", action="store_true")
    status.add_argument("--watch", type=float, metavar="SECONDS", help="refresh until Ctrl-C")
    status.set_defaults(func=cmd_status)
    check = sub.add_parser("check-config", help="validate a configuration file")
    check.add_argument("--config")
    check.set_defaults(func=cmd_check)
    try:
        from .lab.cli import add_lab_parser
    except ImportError:  # the lab is optional on an appliance
        pass
    else:
        add_lab_parser(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
