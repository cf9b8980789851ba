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

import itertools
import json
import math
from typing import Any, NoReturn

MAX_DEPTH = 32  # a sync message holding whole documents nests ~10 deep
MAX_DIGITS = 40  # no integer of ours is longer (a 64-bit counter has 20 digits)


class UntrustedJSON(ValueError):
    """Bytes that are not acceptable JSON; `reason` is the counter name."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason  # too_large | too_deep | not_json | not_object
        self.detail = detail


_STRUCTURE = bytes(c for c in range(256) if c not in b'"[]{}')  # translate() deletes these
_STEP = bytes.maketrans(b"[]{}", b"\x01\xff\x01\xff")  # as signed bytes: +1, -1


def depth(data: bytes) -> int:
    """How deep the brackets of `data` nest, those inside strings left out; every step in C
    (a scan of a 300 kB document costs ~1 ms). A bracket is inside a string when an odd
    number of quotes precedes it, escaped ones (\\" after \\\\ pairs) not counted. Exact for
    JSON; for other bytes, exact along the prefix a parser would accept (where it recurses)."""
    kept = data.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _STRUCTURE)
    kept = kept.replace(b'""', b"")  # two adjacent quotes change no bracket's parity
    if b'"' in kept:
        kept = b"".join(kept.split(b'"')[0::2])  # the brackets outside strings
    steps = memoryview(kept.translate(_STEP)).cast("b")
    return max(0, max(itertools.accumulate(steps), default=0))


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
    if raw.count(b"[") + raw.count(b"{") > max_depth and depth(raw) > max_depth:
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
