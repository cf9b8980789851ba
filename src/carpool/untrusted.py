"""JSON from outside the unit (doctor probes, sync frames, control requests, the partner's
status): parsed here, and only here, into plain values or one typed error, `UntrustedJSON`.

`json.loads` alone is not total: deep nesting raises RecursionError (and the code that walks
the value afterwards recurses too), and a number may be arbitrarily long. So, before parsing,
a cheap scan bounds the nesting depth (brackets inside strings do not count); while parsing,
integers longer than MAX_DIGITS, NaN/Infinity and non-finite floats are refused; the bytes
must be strict UTF-8. `check_depth` bounds a value that was parsed elsewhere (a request a
framework parsed, a document handed in). Pure: bytes in, values or UntrustedJSON out.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, NoReturn

MAX_DEPTH = 32  # a sync message holding whole documents nests ~10 deep
MAX_DIGITS = 40  # no integer of ours is longer (a 64-bit counter has 20 digits)

# A JSON string (escapes included), or one bracket: the scan skips strings whole.
_STRING_OR_BRACKET = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)
_OPEN = frozenset(b"[{")


class UntrustedJSON(ValueError):
    """Bytes that are not acceptable JSON; `reason` is the counter name."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason  # too_large | too_deep | not_json | not_object
        self.detail = detail


def depth(data: bytes) -> int:
    """How deep the brackets of `data` nest, strings skipped (a conservative bound for bytes
    that are not JSON at all: an unterminated string's brackets count)."""
    deepest = level = 0
    for m in _STRING_OR_BRACKET.finditer(data):
        c = m.group()
        if c[0] in _OPEN:
            level += 1
            deepest = max(deepest, level)
        elif c[0] != 0x22:  # a closing bracket ('"' starts a skipped string)
            level -= 1
    return deepest


def _within(data: bytes, max_depth: int) -> bool:
    # fast: fewer opening brackets than the limit cannot nest beyond it
    if data.count(b"[") + data.count(b"{") <= max_depth:
        return True
    return depth(data) <= max_depth


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_DIGITS:
        raise UntrustedJSON("not_json", f"an integer of {len(text)} digits")
    return int(text)


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise UntrustedJSON("not_json", f"number {text[:20]!r} is not finite")
    return value


def _constant(text: str) -> NoReturn:
    raise UntrustedJSON("not_json", f"{text} is not JSON")


def loads(data: bytes | str, *, max_size: int, max_depth: int = MAX_DEPTH) -> Any:
    """The value of `data`, or UntrustedJSON (and nothing else)."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    if len(raw) > max_size:
        raise UntrustedJSON("too_large", f"{len(raw)} bytes > {max_size}")
    if not _within(raw, max_depth):
        raise UntrustedJSON("too_deep", f"nested deeper than {max_depth}")
    try:
        text = raw.decode("utf-8")
        return json.loads(text, parse_int=_int, parse_float=_float, parse_constant=_constant)
    except UntrustedJSON:
        raise
    except (ValueError, RecursionError, TypeError) as e:
        raise UntrustedJSON("not_json", str(e)[:80]) from None


def loads_object(data: bytes | str, *, max_size: int, max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """Like loads, for a JSON object (the only top level any of our messages has)."""
    value = loads(data, max_size=max_size, max_depth=max_depth)
    if not isinstance(value, dict):
        raise UntrustedJSON("not_object", f"a JSON {type(value).__name__}, not an object")
    return value


def check_depth(value: Any, max_depth: int = MAX_DEPTH) -> None:
    """UntrustedJSON if `value` (lists, tuples and dicts) nests deeper than max_depth; walks
    without recursion, so any depth is safe to check."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        if level + 1 > max_depth:
            raise UntrustedJSON("too_deep", f"nested deeper than {max_depth}")
        stack.extend((child, level + 1) for child in children)
