"""A small TOML writer for our documents (the standard library only reads TOML): scalars,
arrays of scalars, tables and arrays of tables at any depth. Round-trips through tomllib; a None
(an unset key) is left out, which reads back as unset."""

from __future__ import annotations

import functools
import json
import math
from typing import Any


@functools.lru_cache(maxsize=4096)
def _key(key: str) -> str:
    # a document repeats a few dozen key names thousands of times: each is judged once
    bare = key and all(c.isalnum() or c in "_-" for c in key)
    return key if bare else json.dumps(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return repr(value) if math.isfinite(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} ({type(value).__name__}) to TOML")


def _table(name: str, table: dict[str, Any], out: list[str], header: str | None) -> None:
    """name: the table's dotted name ("" at the top); header: its [name] line, or None."""
    scalars: list[tuple[str, Any]] = []
    subs: list[tuple[str, Any, bool]] = []  # (key, a table or an array of them, is an array)
    for key, value in table.items():
        if isinstance(value, dict):
            subs.append((key, value, False))
        elif isinstance(value, (list, tuple)) and value and all(isinstance(v, dict) for v in value):
            subs.append((key, value, True))  # an array of tables
        elif value is not None:  # TOML has no null: an unset key (automatic) is left out
            scalars.append((key, value))
    if header is not None and (scalars or not subs):
        out += ["", header]
    out += [f"{_key(k)} = {_value(v)}" for k, v in scalars]
    for key, sub, many in subs:
        sub_name = f"{name}.{_key(key)}" if name else _key(key)
        if many:
            for item in sub:
                out += ["", f"[[{sub_name}]]"]
                _table(sub_name, item, out, None)
        else:
            _table(sub_name, sub, out, f"[{sub_name}]")


def dumps(doc: dict[str, Any]) -> str:
    out: list[str] = []
    _table("", doc, out, None)
    return "\n".join(out).lstrip("\n") + "\n"
