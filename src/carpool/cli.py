"""carpool command line: run, status, lab."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from pathlib import Path

from . import files
from .config.edit import (
    AddRealServer,
    AddVirtualService,
    AlreadyExists,
    Conflict,
    Edit,
    EditError,
    Invalid,
    NotFound,
    Op,
    Refused,
    RemoveRealServer,
    RemoveVirtualService,
    SetKey,
    SetPassword,
    SetRealServer,
    SetVirtualService,
    error_of,
)
from .config.ha import Config, ConfigError, load_config

DEFAULT_CONFIG = "/etc/carpool/carpool.toml"
# Exit status of a change the daemon refused, by its typed error; any other failure is 1
# (the standby refusing, no daemon answering).
EXIT_CODES: dict[type[EditError], int] = {Invalid: 2, NotFound: 3, AlreadyExists: 4, Conflict: 5}


def exit_code(error: EditError) -> int:
    return next((EXIT_CODES[c] for c in type(error).__mro__ if c in EXIT_CODES), 1)


def _config_path(args) -> str:
    return args.config or os.environ.get("CARPOOL_CONFIG") or DEFAULT_CONFIG


def _load(args) -> Config:
    try:
        return load_config(_config_path(args))
    except ConfigError as e:
        print(f"carpool: invalid configuration, nothing changed:\n{e}", file=sys.stderr)
        raise SystemExit(2) from None


def _logging(cfg: Config, who: str) -> None:
    logging.basicConfig(
        level=cfg.log_level.upper(),
        stream=sys.stderr,
        format=f"%(asctime)s {cfg.role} {who} %(name)s %(levelname)s %(message)s",
    )


def cmd_run(args) -> int:
    files.private_umask()  # supervisor and worker: what they create is theirs alone (077)
    cfg = _load(args)
    if args.worker:
        from .config.ha import with_document
        from .node.configd import open_store
        from .node.daemon import Daemon

        _logging(cfg, "daemon")
        store = open_store(cfg)
        current = store.current
        if current is None:  # (never: open_store makes a first version from the file)
            print("carpool: the configuration store has no current version", file=sys.stderr)
            return 1
        return asyncio.run(Daemon(with_document(cfg, current.document), store).run())
    from .node.supervisor import supervise

    _logging(cfg, "supervisor")
    return supervise(cfg)


def _ago(seconds) -> str:
    return "never" if seconds is None else f"{seconds:.1f}s ago"


def _sync_line(s: dict) -> str:
    c, y = s.get("config") or {}, s.get("sync") or {}
    line = (
        f"  config version {c.get('version')} ({(c.get('hash') or '')[:12]}); sync {y.get('state')}"
    )
    if y.get("partner_version") is not None:
        line += f", partner at version {y['partner_version']} (lag {y.get('lag')})"
    return line


def format_status(s: dict) -> str:
    lines = [
        f"unit {s['role']}: {s['state'].upper()} for {s['since_ago'] or 0:.1f}s ({s['reason']})",
        f"  {s['protocol']} vhid {s['vhid']}  advbase {s['advbase']} advskew {s['advskew']}  "
        f"priority {s['priority']}  preempt {'yes' if s['preempt'] else 'no'}  "
        f"{s['transport']}{'  vmac ' + s['vmac'] if s['vmac'] else ''}",
        f"  demote {s['demote']}: {', '.join(s['demote_reasons']) or 'no failed checks'}",
        *([f"  PACIFIED: {s['pacified']}"] if s.get("pacified") else []),
        f"  shared held: {', '.join(s['shared_held']) or 'none'}",
        _sync_line(s),
        "  partner by interface:",
    ]
    for name, p in s["partner"].items():
        ping = (
            ("ok {:.2f} ms".format(p["ping_rtt_ms"]))
            if p["ping_ok"]
            else ("no answer" if p["ping_ok"] is False else "-")
        )
        target = ""
        if p["ping_target"]:
            target = f"  target {p['ping_target']} {'ok' if p['ping_target_ok'] else 'FAILED'}"
        lines.append(
            f"    {name:<6} link {'up' if p['link_up'] else 'DOWN':<4} "
            f"{'hb ' if p['heartbeat'] else ''}partner {p['address']}: advert "
            f"{_ago(p['advert_seen_ago'])}, ping {ping}{target}"
        )
    drops = ", ".join(f"{k} {v}" for k, v in sorted(s["drops"].items())) or "none"
    c, t = s["counters"], s["timers"]
    lines += [
        f"  adverts sent {c['adverts_sent']} received {c['adverts_received']} "
        f"send errors {c['send_errors']}  drops: {drops}",
        f"  timers: advert every {t['advert_interval']:.3f}s, master down after "
        f"{t['master_down']:.3f}s",
    ]
    lines += [f"  WARNING: {w}" for w in s.get("warnings", [])]
    return "\n".join(lines)


def cmd_status(args) -> int:
    from .node import control

    cfg = _load(args)
    try:
        status = control.request(cfg.socket_path, "status")
    except (OSError, ValueError) as e:
        print(f"carpool: no daemon answers on {cfg.socket_path}: {e}", file=sys.stderr)
        return 1
    if "error" in status:  # e.g. refused: neither root nor in unit.control_group
        print(f"carpool: {status['error']}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=True))
    elif args.watch:
        try:
            while True:
                print(
                    "\033[H\033[J" + format_status(control.request(cfg.socket_path, "status")),
                    flush=True,
                )
                time.sleep(args.watch)
        except KeyboardInterrupt:
            return 0
    else:
        print(format_status(status))
    return 0


def _request(args, command: str, timeout: float = 10.0, **fields) -> dict | EditError:
    """One control request to the local daemon: its answer, or its typed error (printed)."""
    from .node import control

    cfg = _load(args)
    try:
        answer = control.request(cfg.socket_path, command, timeout=timeout, **fields)
    except (OSError, ValueError) as e:
        error: EditError | None = Refused("", f"no daemon answers on {cfg.socket_path}: {e}")
    else:
        error = error_of(answer)
    if error is not None:
        print(f"carpool: {error.message}", file=sys.stderr)
        return error
    return answer


def _ask(args, command: str, timeout: float = 10.0, **fields) -> dict | None:
    """One control request to the local daemon; prints its error and returns None."""
    answer = _request(args, command, timeout, **fields)
    return None if isinstance(answer, EditError) else answer


def _who() -> str:
    return f"cli ({os.environ.get('SUDO_USER') or os.environ.get('USER') or 'root'})"


def _change(args, command: str, **fields) -> int:
    """A change made by the daemon: prints the new version, or exits by the error's type."""
    answer = _request(args, command, **fields)
    if isinstance(answer, EditError):
        return exit_code(answer)
    print(_changed(answer))
    return 0


def _edit(args, *ops: Op) -> int:
    """Operations the daemon applies to its current version (or to --expect-version only)."""
    edit = Edit(ops, getattr(args, "expect_version", None))
    return _change(args, "config.edit", who=_who(), **edit.to_json())


def _value(text: str):
    """A TOML value if it parses as one (5, true, ["a"]), else the text as a string."""
    import tomllib

    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _changed(answer: dict) -> str:
    what = ", ".join(answer.get("what", [])[:10]) or "no change"
    return f"version {answer['version']} ({answer['hash'][:12]}): {what}"


def cmd_config(args) -> int:
    import tomllib

    from .config import tomlw

    action = args.action
    if action == "show":
        answer = _ask(args, "config.show")
        if answer is None:
            return 1
        if args.json:
            print(json.dumps(answer, indent=2, sort_keys=True))
        else:
            print(f"# version {answer['version']} hash {answer['hash']}")
            print(tomlw.dumps(answer["document"]), end="")
        return 0
    if action == "set":
        return _edit(args, SetKey(args.key, _value(args.value)))
    if action == "apply":
        try:
            with open(args.file, "rb") as f:
                document = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError) as e:
            print(f"carpool: {args.file}: {e}", file=sys.stderr)
            return 1
        return _change(args, "config.apply", document=document, who=_who())
    if action == "rollback":
        return _change(args, "config.rollback", version=args.version, who=_who())
    if action == "diff":
        answer = _ask(args, "config.diff", a=args.a, b=args.b)
        if answer is not None:
            print(f"--- version {answer['a']}\n+++ version {answer['b']}")
            print("\n".join(answer["diff"]) or "(no difference)")
            return 0
        return 1
    if action == "history":
        answer = _ask(args, "config.history")
        if answer is not None:
            if args.json:
                print(json.dumps(answer["history"], indent=2))
                return 0
            for r in answer["history"]:
                when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["when"]))
                flag = f"  CONFLICT: {r['conflict']}" if r["conflict"] else ""
                print(
                    f"{r['version']:>6}  {r['hash'][:12]}  {when}  {r['origin'] or '-':<6} "
                    f"{r['who']}: {', '.join(r['what'][:6]) or '-'}{flag}"
                )
            return 0
        return 1
    # sync
    if not args.force:
        answer = _ask(args, "status")
        if answer is not None:
            print(json.dumps(answer["sync"], indent=2, sort_keys=True))
            return 0
        return 1
    answer = _ask(args, "config.sync", timeout=60.0)
    if answer is not None:
        print(
            f"partner updated: pushed versions {answer['pushed'] or 'none'}, "
            f"kept as conflict there: {answer['kept_as_conflict'] or 'none'}"
        )
        return 0
    return 1


def _document(args) -> dict | None:
    answer = _ask(args, "config.show")
    return None if answer is None else answer["document"]


def _find_vs(doc: dict, name: str) -> dict | None:
    found = [v for v in doc.get("virtual_service", []) if v["name"] == name]
    if not found:
        names = ", ".join(v["name"] for v in doc.get("virtual_service", [])) or "none"
        print(f"carpool: no virtual service {name!r} (there are: {names})", file=sys.stderr)
        return None
    return found[0]


def _server_ref(text: str) -> tuple[str, int]:
    address, _, port = text.rpartition(":")
    if not address or not port.isdigit():
        raise SystemExit(f"carpool: {text!r}: give a real server as ADDRESS:PORT")
    return address, int(port)


def cmd_vs(args) -> int:
    if args.action in ("list", "show"):
        status = _ask(args, "status")
        doc = None if status is None else _document(args)
        if status is None or doc is None:
            return 1
        health = {
            (s["service"], s["address"], s["port"]): s
            for s in status.get("dataplane", {}).get("servers", [])
        }
        services = doc.get("virtual_service", [])
        if args.action == "show":
            vs = _find_vs(doc, args.name)
            if vs is None:
                return EXIT_CODES[NotFound]
            services = [vs]
        for vs in services:
            print(
                f"{vs['name']}: {vs['address']}:{vs['port']}/{vs['protocol']} {vs['type']} "
                f"{vs['scheduler']}"
                + (f" persistence {vs['persistence']}s" if vs["persistence"] else "")
            )
            for rs in vs["real_server"]:
                h = health.get((vs["name"], rs["address"], rs["port"]))
                state = (
                    "disabled"
                    if not rs["enabled"]
                    else (
                        "unchecked"
                        if h is None
                        else ("up" if h["up"] else f"DOWN ({h['last_error']})")
                    )
                )
                print(f"    {rs['address']}:{rs['port']} weight {rs['weight']} {state}")
        return 0
    if args.action == "add":
        return _edit(
            args,
            AddVirtualService(
                {
                    "name": args.name,
                    "address": args.address,
                    "port": args.port,
                    "protocol": args.protocol,
                    "type": args.type,
                    "scheduler": args.scheduler,
                    "persistence": args.persistence,
                    "real_server": [],
                    **({"certificate": args.certificate} if args.certificate else {}),
                }
            ),
        )
    if args.action == "rm":
        return _edit(args, RemoveVirtualService(args.name))
    return _edit(args, SetVirtualService(args.name, args.key, _value(args.value)))  # set


def cmd_cert(args) -> int:
    """TLS certificates for https services (the key is read from a file and never shown)."""
    from .config.edit import AddCertificate, RemoveCertificate, ReplaceCertificate

    if args.action == "list":
        answer = _ask(args, "config.certificates")
        if answer is None:
            return 1
        if args.json:
            print(json.dumps(answer["certificates"], indent=2))
            return 0
        for row in answer["certificates"]:
            until = time.strftime("%Y-%m-%d", time.gmtime(row["not_after"]))
            print(
                f"{row['name']}: {row['subject']} ({row['key_type']}"
                + (", key stored" if row["key"] else ", CA certificates")
                + f") until {until}, {row['days_left']:g} days left [{row['state']}]"
            )
            print(f"    names: {', '.join(row['names']) or 'none'}")
            print(f"    used by: {', '.join(row['used_by']) or 'nothing'}")
        return 0
    if args.action == "rm":
        return _edit(args, RemoveCertificate(args.name))
    try:
        chain = Path(args.chain).read_text()
        key = Path(args.key).read_text() if args.key else ""
    except (OSError, UnicodeDecodeError) as e:
        print(f"carpool: cannot read the certificate files: {e}", file=sys.stderr)
        return 2
    op = AddCertificate if args.action == "add" else ReplaceCertificate
    return _edit(args, op(args.name, chain, key))


def cmd_rs(args) -> int:
    address, port = _server_ref(args.server)
    if args.action == "add":
        return _edit(
            args, AddRealServer(args.vs, {"address": address, "port": port, "weight": args.weight})
        )
    if args.action == "rm":
        return _edit(args, RemoveRealServer(args.vs, address, port))
    if args.action in ("enable", "disable"):
        return _edit(
            args, SetRealServer(args.vs, address, port, "enabled", args.action == "enable")
        )
    return _edit(args, SetRealServer(args.vs, address, port, args.key, _value(args.value)))


def cmd_failover(args) -> int:
    answer = _ask(args, "ha.failover", hold=args.hold, who=_who())
    if answer is None:
        return 1
    print(
        f"now {answer['state']}: {answer['reason']}; the partner takes over "
        f"(no preempting back for {answer['hold']:g} s)"
    )
    return 0


def cmd_doctor(args) -> int:
    answer = _ask(args, "doctor", timeout=30.0)
    if answer is None:
        return 2
    checks = answer["checks"]
    if args.json:
        print(json.dumps({"checks": checks}, indent=2))
    else:
        for c in checks:
            print(f"{'ok  ' if c['ok'] else 'FAIL'} {c['name']}: {c['detail']}")
            if not c["ok"] and c["hint"]:
                print(f"       {c['hint']}")
        failed = [c["name"] for c in checks if not c["ok"]]
        print(
            f"\n{len(checks) - len(failed)} of {len(checks)} checks passed"
            + (f"; failed: {', '.join(failed)}" if failed else "")
        )
    return 0 if all(c["ok"] for c in checks) else 1


def cmd_pacify(args) -> int:
    answer = _ask(args, "pacify", clear=args.clear, who=_who())
    if answer is None:
        return 1
    if args.clear:
        print(
            "cleared: this unit may become active again"
            if answer["was"]
            else "this unit was not pacified; its start history is reset"
        )
    else:
        print(f"pacified: {answer['pacified']}" if answer["pacified"] else "not pacified")
    return 0


def _new_password(args) -> str | None:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        import getpass

        password = getpass.getpass(f"new password for {args.user}: ")
        if getpass.getpass("again: ") != password:
            print("carpool: the two passwords differ; nothing changed", file=sys.stderr)
            return None
    if len(password) < 8:
        print("carpool: the password needs at least 8 characters; nothing changed", file=sys.stderr)
        return None
    return password


def cmd_passwd(args) -> int:
    """Set a WUI/API user's password: an argon2 hash in the synced document (both units). The
    hash is made here: the password never crosses the control socket."""
    from .web.auth import hash_password

    if _ask(args, "config.history") is None:  # no daemon: say so before asking for a password
        return 1
    password = _new_password(args)
    if password is None:
        return 1
    return _edit(args, SetPassword(args.user, hash_password(password)))


def cmd_check(args) -> int:
    cfg = _load(args)
    print(
        f"{cfg.path}: valid ({cfg.protocol}, vhid {cfg.vhid}, unit {cfg.role}, "
        f"{len(cfg.interfaces)} interfaces)"
    )
    return 0


def _expect_version(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--expect-version",
        type=int,
        metavar="VERSION",
        help="change only if the configuration is still at this version "
        "(else exit 5, nothing changed)",
    )


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
    doctor = sub.add_parser(
        "doctor",
        help="check every HA prerequisite on the live network "
        "(with the partner) and say how to fix what fails",
    )
    doctor.add_argument("--config")
    doctor.add_argument("--json", action="store_true")
    doctor.set_defaults(func=cmd_doctor)
    pacify = sub.add_parser(
        "pacify",
        help="reboot-loop protection: show, or --clear, the mark that keeps this unit standby",
    )
    pacify.add_argument("--config")
    pacify.add_argument("--clear", action="store_true")
    pacify.set_defaults(func=cmd_pacify)
    failover = sub.add_parser(
        "failover", help="force a graceful switch to the partner (run on the active unit)"
    )
    failover.add_argument("--config")
    failover.add_argument(
        "--hold",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="do not preempt back for this long (default 300)",
    )
    failover.set_defaults(func=cmd_failover)
    config = sub.add_parser("config", help="the appliance configuration (versioned, synced)")
    config.add_argument("--config")
    csub = config.add_subparsers(dest="action", required=True)
    c = csub.add_parser("show", help="the current version")
    c.add_argument("--json", action="store_true")
    c = csub.add_parser("set", help="set one dotted key, e.g. appliance.description")
    c.add_argument("key")
    c.add_argument("value", help='a TOML value (5, true, ["a"]) or plain text')
    _expect_version(c)
    c = csub.add_parser("apply", help="replace the document with a TOML file")
    c.add_argument("file")
    c = csub.add_parser("diff", help="changes between versions (default: previous -> current)")
    c.add_argument("a", nargs="?", help="VERSION or VERSION:HASH (a conflict's hash prefix)")
    c.add_argument("b", nargs="?")
    c = csub.add_parser("history", help="kept versions, conflicts marked")
    c.add_argument("--json", action="store_true")
    c = csub.add_parser("rollback", help="make an old version current again (a new version)")
    c.add_argument("version", type=int)
    c = csub.add_parser("sync", help="sync state; --force pushes ours to the partner")
    c.add_argument("--force", action="store_true")
    for p in csub.choices.values():
        p.add_argument("--config", default=argparse.SUPPRESS)
    config.set_defaults(func=cmd_config)
    vs = sub.add_parser("vs", help="virtual services (changes go through the synced document)")
    vs.add_argument("--config")
    vsub = vs.add_subparsers(dest="action", required=True)
    vsub.add_parser("list", help="services and real-server health")
    c = vsub.add_parser("show")
    c.add_argument("name")
    c = vsub.add_parser("add")
    c.add_argument("name")
    c.add_argument("address")
    c.add_argument("port", type=int)
    c.add_argument("--type", choices=("l4", "http", "https"), default="l4")
    c.add_argument(
        "--certificate",
        action="append",
        metavar="NAME",
        help="https: a certificate (carpool cert add); repeat for more (SNI), the first default",
    )
    c.add_argument("--protocol", choices=("tcp", "udp"), default="tcp")
    c.add_argument("--scheduler", choices=("rr", "wrr", "lc", "sh", "fixed"), default="rr")
    c.add_argument("--persistence", type=int, default=0, metavar="SECONDS")
    c = vsub.add_parser("set", help="set one key, e.g. scheduler wrr or check.type https")
    c.add_argument("name")
    c.add_argument("key")
    c.add_argument("value")
    c = vsub.add_parser("rm")
    c.add_argument("name")
    for name, p in vsub.choices.items():
        p.add_argument("--config", default=argparse.SUPPRESS)
        if name in ("add", "set", "rm"):
            _expect_version(p)
    vs.set_defaults(func=cmd_vs)
    cert = sub.add_parser("cert", help="TLS certificates for https services (synced)")
    cert.add_argument("--config")
    certsub = cert.add_subparsers(dest="action", required=True)
    c = certsub.add_parser("list", help="names, dates, days left, what uses each")
    c.add_argument("--json", action="store_true")
    for name, what in (
        ("add", "upload a certificate (chain and key files, PEM)"),
        ("replace", "renew a certificate (the stored key stays without --key)"),
    ):
        c = certsub.add_parser(name, help=what)
        c.add_argument("name")
        c.add_argument("--chain", required=True, help="PEM file: the certificate, then issuers")
        c.add_argument(
            "--key",
            required=False,
            help="PEM file: its private key (none: CA certificates for backend_ca)",
        )
    c = certsub.add_parser("rm", help="remove a certificate no service uses")
    c.add_argument("name")
    for name, p in certsub.choices.items():
        p.add_argument("--config", default=argparse.SUPPRESS)
        if name != "list":
            _expect_version(p)
    cert.set_defaults(func=cmd_cert)
    rs = sub.add_parser("rs", help="real servers of a virtual service")
    rs.add_argument("--config")
    rsub = rs.add_subparsers(dest="action", required=True)
    for name in ("add", "set", "rm", "enable", "disable"):
        c = rsub.add_parser(name)
        c.add_argument("vs")
        c.add_argument("server", help="ADDRESS:PORT")
        if name == "add":
            c.add_argument("--weight", type=int, default=1)
        if name == "set":
            c.add_argument("key")
            c.add_argument("value")
        c.add_argument("--config", default=argparse.SUPPRESS)
        _expect_version(c)
    rs.set_defaults(func=cmd_rs)
    passwd = sub.add_parser("passwd", help="set a WUI/REST API user's password (synced)")
    passwd.add_argument("user", nargs="?", default="admin")
    passwd.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of stdin (scripts)",
    )
    passwd.add_argument("--config")
    _expect_version(passwd)
    passwd.set_defaults(func=cmd_passwd)
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
