"""A synced document is untrusted input (issue 13, point 6): whatever the partner (or an editor)
sends, the unit that validates it is not hurt — no RecursionError, no quadratic time, nothing
that reaches a protocol, a file or a terminal unchecked."""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest

from carpool.config import document
from carpool.config.document import DocumentError, parse_document

DOC: dict[str, Any] = {
    "interface": [
        {
            "name": "eth0",
            "first": "198.18.0.11",
            "second": "198.18.0.12",
            "shared": ["198.18.0.10/24"],
        },
        {"name": "eth1", "first": "198.18.1.1", "second": "198.18.1.2", "heartbeat": True},
        {
            "name": "eth2",
            "first": "198.18.2.11",
            "second": "198.18.2.12",
            "shared": ["198.18.2.1/24"],
        },
    ],
    "virtual_service": [
        {
            "name": "web",
            "address": "198.18.0.10",
            "port": 80,
            "real_server": [{"address": "198.18.2.101", "port": 80}],
        }
    ],
}


def problems(doc: dict[str, Any]) -> list[str]:
    """Every problem of doc as `KEY: why` lines ([] when valid)."""
    try:
        parse_document(doc)
    except DocumentError as e:
        return [str(p) for p in e.problems]
    return []


def changed(path: str, value: Any, doc: dict[str, Any] = DOC) -> dict[str, Any]:
    """doc with one value set, e.g. changed("interface.0.name", "x")."""
    out = copy.deepcopy(doc)
    *parents, last = path.split(".")
    here: Any = out
    for step in parents:
        here = here[int(step)] if isinstance(here, list) else here[step]
    if isinstance(here, list):
        here[int(last)] = value
    else:
        here[last] = value
    return out


def test_the_base_document_is_valid():
    assert problems(DOC) == []


# -- nesting depth --------------------------------------------------------------------------
def nested(depth: int, kind: type) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"x": value} if kind is dict else [value]
    return value


@pytest.mark.parametrize("kind", [dict, list])
@pytest.mark.parametrize("where", ["appliance", "virtual_service"])
def test_deep_nesting_is_a_clear_error_not_a_recursion_error(kind, where):
    doc = {**DOC, where: nested(10_000, kind)}
    assert problems(doc) == [f"{where}: nested deeper than {document.MAX_DEPTH} levels"]


def test_nesting_a_real_document_needs_is_far_below_the_limit():
    # as deep as allowed: refused for its unknown key only
    doc = {**DOC, "appliance": nested(document.MAX_DEPTH - 1, dict)}
    assert problems(doc) == ["appliance.x: unknown key"]


# -- time linear in the number of services --------------------------------------------------
def services(n: int) -> dict[str, Any]:
    return {
        **DOC,
        "virtual_service": [
            {
                "name": f"vs{k}",
                "address": "198.18.0.10",
                "port": 1 + k % 65535,
                "real_server": [{"address": "198.18.2.101", "port": 80}],
            }
            for k in range(n)
        ],
    }


def test_10000_services_validate_in_well_under_a_second():
    doc = services(10_000)
    took = min(_timed(doc) for _ in range(3))
    # measured ~0.16 s here (1.4 s while the cross checks were quadratic); master-down is ~3 s
    assert took < 0.5, f"10000 services took {took:.3f} s to validate"


def _timed(doc: dict[str, Any]) -> float:
    start = time.perf_counter()
    parse_document(doc)
    return time.perf_counter() - start


def test_duplicates_among_many_services_are_each_reported_once():
    doc = services(3)
    doc["virtual_service"] += copy.deepcopy(doc["virtual_service"][:2])
    assert problems(doc) == [
        "virtual_service[0].name: vs0 is used twice",
        "virtual_service[1].name: vs1 is used twice",
        "virtual_service[3].name: vs0 is used twice",
        "virtual_service[3].port: 198.18.0.10:1/tcp is already used by vs0",
        "virtual_service[4].name: vs1 is used twice",
        "virtual_service[4].port: 198.18.0.10:2/tcp is already used by vs1",
    ]
