"""A small TOML writer for our documents (the standard library only reads TOML): scalars,
arrays of scalars, tables and arrays of tables at any depth. Round-trips through tomllib."""

from __future__ import annotations

import json
import math
from typing import Any


def _key(key: str) -> str:
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


def _is_tables(value: Any) -> bool:
    return (
        isinstance(value, (list, tuple)) and bool(value) and all(isinstance(v, dict) for v in value)
    )


def _table(path: list[str], table: dict[str, Any], out: list[str], header: str | None) -> None:
    scalars = [(k, v) for k, v in table.items() if not isinstance(v, dict) and not _is_tables(v)]
    if header is not None and (
        scalars or not any(isinstance(v, dict) or _is_tables(v) for v in table.values())
    ):
        out += ["", header]
    out += [f"{_key(k)} = {_value(v)}" for k, v in scalars]
    for key, sub in table.items():
        name = ".".join(_key(p) for p in path + [key])
        if isinstance(sub, dict):
            _table(path + [key], sub, out, f"[{name}]")
        elif _is_tables(sub):
            for item in sub:
                out += ["", f"[[{name}]]"]
                _table(path + [key], item, out, None)


def dumps(doc: dict[str, Any]) -> str:
    out: list[str] = []
    _table([], doc, out, None)
    return "\n".join(out).lstrip("\n") + "\n"
