"""Browser forms -> document values, and document problems -> messages next to the field. Pure.

The document's own validation (carpool.config.document) decides; this module only converts
form text to typed values and sorts the problems by field."""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..config import tomlw
from ..config.document import Loc, Pool, Problem, Rule, key_of
from ..family import hostport

VS_FIELDS = (
    "name",
    "address",
    "port",
    "protocol",
    "type",
    "scheduler",
    "persistence",
    "drain_timeout",
    "check_type",
    "check_path",
    "real_servers",
    "certificate",
    "tls_profile",
    "hsts",
    "redirect_http",
    "backend_tls",
    "backend_ca",
    "content",
)
# ADDRESS:PORT [WEIGHT]; an IPv6 address in brackets, as in a URL (its last group would read as
# the port otherwise). The address itself is the document's to judge.
_SERVER = re.compile(
    r"^\s*(?:\[([0-9A-Fa-f:.]+)\]|([0-9.]+)):(\d{1,5})(?:\s+(?:weight\s*=?\s*)?(\d+))?\s*$"
)


class FormErrors(Exception):
    def __init__(self, errors: dict[str, list[str]]):
        super().__init__("; ".join(f"{k}: {', '.join(v)}" for k, v in errors.items()))
        self.errors = errors


def _int(form: dict, key: str, errors: dict, default: int | None = None) -> int | None:
    text = (form.get(key) or "").strip()
    if not text and default is not None:
        return default
    if not re.fullmatch(r"-?\d+", text):
        errors.setdefault(key, []).append(f"a whole number, not {text!r}" if text else "required")
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
                f"line {n}: write ADDRESS:PORT [WEIGHT] (an IPv6 address in brackets: "
                f"[ADDRESS]:PORT), not {line.strip()!r}"
            )
            continue
        server = {"address": m[1] or m[2], "port": int(m[3])}
        if m[4] is not None:
            server["weight"] = int(m[4])
        servers.append(server)
    return servers


def servers_text(vs: dict) -> str:
    return "\n".join(
        hostport(r["address"], r["port"]) + (f" {r['weight']}" if r.get("weight", 1) != 1 else "")
        for r in vs.get("real_server", [])
    )


def vs_from_form(form: dict, old: dict | None = None) -> dict:
    """A virtual service (document dict) from the form; keys the form lacks keep old's values.
    Raises FormErrors for text that is no value of the right type."""
    errors: dict[str, list[str]] = {}
    vs = dict(old or {})
    vs.update(
        name=(form.get("name") or "").strip(),
        address=(form.get("address") or "").strip(),
        protocol=form.get("protocol") or "tcp",
        type=form.get("type") or "l4",
        scheduler=form.get("scheduler") or "rr",
    )
    vs["port"] = _int(form, "port", errors)
    vs["persistence"] = _int(form, "persistence", errors, default=0)
    vs["drain_timeout"] = _int(form, "drain_timeout", errors, default=0)
    # TLS: certificates as "www, api" (the first the default); set only where they apply, so
    # an l4 or http service keeps none of them
    names = [n.strip() for n in (form.get("certificate") or "").replace(",", " ").split()]
    for key in ("certificate", "tls_profile", "hsts", "redirect_http"):
        vs.pop(key, None)
    if vs["type"] == "https":
        vs["certificate"] = names
        vs["tls_profile"] = form.get("tls_profile") or "intermediate"
        vs["hsts"] = _int(form, "hsts", errors, default=0)
        vs["redirect_http"] = form.get("redirect_http") == "on"
    content = _content(form.get("content") or "", errors)
    for key in ("pool", "rule"):
        vs.pop(key, None)
    vs.update(content)
    vs["backend_tls"] = form.get("backend_tls") == "on"
    vs["backend_ca"] = (form.get("backend_ca") or "").strip() if vs["backend_tls"] else ""
    check = dict(vs.get("check") or {})
    check["type"] = form.get("check_type") or "tcp"
    if form.get("check_path"):
        check["path"] = form["check_path"].strip()
    vs["check"] = check
    old_servers = {(r["address"], r["port"]): r for r in vs.get("real_server", [])}
    vs["real_server"] = [
        {**old_servers.get((s["address"], s["port"]), {}), **s}
        for s in parse_servers(form.get("real_servers", ""), errors)
    ]
    if errors:
        raise FormErrors(errors)
    return vs


def _content(text: str, errors: dict) -> dict:
    """The content rules and pools from their TOML ([[pool]] and [[rule]] tables)."""
    import tomllib

    if not text.strip():
        return {}
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        errors.setdefault("content", []).append(f"not TOML: {e}")
        return {}
    except RecursionError:
        errors.setdefault("content", []).append("nested too deep")
        return {}
    extra = sorted(set(data) - {"pool", "rule"})
    if extra:
        errors.setdefault("content", []).append(
            f"only [[pool]] and [[rule]] tables here, not {', '.join(extra)}"
        )
    return {k: v for k, v in data.items() if k in ("pool", "rule")}


def content_text(vs: dict) -> str:
    """A service's pools and rules as the form's TOML, defaults left out."""
    out = {}
    for key, model in (("pool", Pool), ("rule", Rule)):
        defaults = {n: f.default for n, f in model.model_fields.items()}
        items = [
            {
                k: v
                for k, v in item.items()
                if k in ("name", "real_server") or v != _plain(defaults.get(k))
            }
            for item in vs.get(key, [])
        ]
        if items:
            out[key] = items
    return tomlw.dumps(out) if out else ""


def _plain(value):
    """A model default as the document's JSON form has it (tuples as lists, models as dicts)."""
    if isinstance(value, tuple):
        return list(value)
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    return value


def field_of(loc: Loc) -> str:
    """The form field of a place inside one virtual service (`check.type` -> check_type)."""
    if not loc:
        return "general"
    if loc[0] == "real_server":
        return "real_servers"
    if loc[0] == "certificate":
        return "certificate"
    if loc[0] in ("pool", "rule"):
        return "content"
    if loc[0] == "check":
        return f"check_{loc[1]}" if len(loc) > 1 and loc[1] in ("type", "path") else "general"
    return str(loc[0]) if loc[0] in VS_FIELDS else "general"


def vs_problems(problems: Sequence[Problem], subject: Loc | int) -> dict[str, list[str]]:
    """Document problems sorted into the fields of the virtual service at `subject`
    (("virtual_service", n), or n); others are general."""
    if isinstance(subject, int):
        subject = ("virtual_service", subject)
    errors: dict[str, list[str]] = {}
    for p in problems:
        inside = bool(subject) and p.loc[: len(subject)] == tuple(subject)
        field = field_of(p.loc[len(subject) :]) if inside else "general"
        where = p.loc[len(subject) :] if inside else ()
        why = f"{key_of(where)}: {p.why}" if field == "content" and where else p.why
        errors.setdefault(field, []).append(why if inside else str(p))
    return errors
