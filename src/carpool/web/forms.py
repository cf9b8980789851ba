"""Browser forms -> document changes, and document problems -> messages next to the field. Pure.

The document's own validation (carpool.config.document) decides; this module only converts
form text to typed values and sorts the problems by field."""
from __future__ import annotations

import re

VS_FIELDS = ("name", "address", "port", "protocol", "type", "scheduler", "persistence",
             "check_type", "check_path", "real_servers")
_SERVER = re.compile(r"^\s*([0-9.]+):(\d{1,5})(?:\s+(?:weight\s*=?\s*)?(\d+))?\s*$")


class FormErrors(Exception):
    def __init__(self, errors: dict[str, list[str]]):
        super().__init__("; ".join(f"{k}: {', '.join(v)}" for k, v in errors.items()))
        self.errors = errors


def _int(form: dict, key: str, errors: dict, default: int | None = None) -> int | None:
    text = (form.get(key) or "").strip()
    if not text and default is not None:
        return default
    if not re.fullmatch(r"-?\d+", text):
        errors.setdefault(key, []).append(f"a whole number, not {text!r}" if text
                                           else "required")
        return None
    return int(text)


def parse_servers(text: str, errors: dict) -> list[dict]:
    servers = []
    for n, line in enumerate((text or "").splitlines(), 1):
        if not line.strip():
            continue
        m = _SERVER.match(line)
        if not m:
            errors.setdefault("real_servers", []).append(
                f"line {n}: write ADDRESS:PORT [WEIGHT], not {line.strip()!r}")
            continue
        server = {"address": m[1], "port": int(m[2])}
        if m[3] is not None:
            server["weight"] = int(m[3])
        servers.append(server)
    return servers


def servers_text(vs: dict) -> str:
    return "\n".join(f"{r['address']}:{r['port']}" + (f" {r['weight']}" if r.get("weight", 1) != 1
                                                      else "")
                     for r in vs.get("real_server", []))


def vs_from_form(form: dict, old: dict | None = None) -> dict:
    """A virtual service (document dict) from the form; keys the form lacks keep old's values.
    Raises FormErrors for text that is no value of the right type."""
    errors: dict[str, list[str]] = {}
    vs = dict(old or {})
    vs.update(name=(form.get("name") or "").strip(), address=(form.get("address") or "").strip(),
              protocol=form.get("protocol") or "tcp", type=form.get("type") or "l4",
              scheduler=form.get("scheduler") or "rr")
    vs["port"] = _int(form, "port", errors)
    vs["persistence"] = _int(form, "persistence", errors, default=0)
    check = dict(vs.get("check") or {})
    check["type"] = form.get("check_type") or "tcp"
    if form.get("check_path"):
        check["path"] = form["check_path"].strip()
    vs["check"] = check
    old_servers = {(r["address"], r["port"]): r for r in vs.get("real_server", [])}
    vs["real_server"] = [{**old_servers.get((s["address"], s["port"]), {}), **s}
                         for s in parse_servers(form.get("real_servers", ""), errors)]
    if errors:
        raise FormErrors(errors)
    return vs


def field_of(key: str) -> str:
    """The form field a document problem key belongs to (inside one virtual service)."""
    if key.startswith("real_server"):
        return "real_servers"
    if key.startswith("check."):
        return "check_" + key.split(".")[1] if key.split(".")[1] in ("type", "path") \
            else "general"
    return key if key in VS_FIELDS else "general"


def vs_problems(problems: list[str], index: int) -> dict[str, list[str]]:
    """Document problems sorted into the fields of virtual_service[index]; others are general."""
    prefix = f"virtual_service[{index}]"
    errors: dict[str, list[str]] = {}
    for problem in problems:
        key, _, why = problem.partition(": ")
        if key.startswith(prefix + "."):
            errors.setdefault(field_of(key[len(prefix) + 1:]), []).append(why)
        elif key == prefix:
            errors.setdefault("general", []).append(why)
        else:
            errors.setdefault("general", []).append(problem)
    return errors
