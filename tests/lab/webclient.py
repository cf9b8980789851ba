"""Helpers for tests of the units' WUI and REST API from the root namespace (which reaches the
lab's LAN through 198.18.0.254)."""

from __future__ import annotations

import httpx

from carpool.lab.units import WUI_PASSWORD, WUI_USER, wui_url

AUTH = (WUI_USER, WUI_PASSWORD)


def other(unit: str) -> str:
    return "b" if unit == "a" else "a"


def _as_a_script(request: httpx.Request) -> None:
    # A POST by HTTP Basic must be one no other site's page can make: JSON or this header.
    if request.method == "POST":
        request.headers.setdefault("X-Requested-With", "carpool-lab")


def client(unit: str, auth=AUTH, timeout: float = 5.0) -> httpx.Client:
    """An API client of unit a or b (self-signed certificate: not verified), as a script is
    one: X-Requested-With on a POST (an answer 401 still has its Basic challenge)."""
    return httpx.Client(
        base_url=wui_url(unit),
        auth=auth,
        verify=False,
        timeout=timeout,
        event_hooks={"request": [_as_a_script]},
    )


def wui_ready(lab, units=("a", "b"), timeout: float = 20.0) -> None:
    """Wait until both units' WUIs answer (they start right after the election)."""

    def answers():
        for unit in units:
            try:
                with client(unit, timeout=1.0) as c:
                    if c.get("/api/openapi.json").status_code != 200:
                        return False
            except httpx.HTTPError:
                return False
        return True

    lab.wait_for(answers, timeout, interval=0.2, what=f"the WUIs of {units} answer")


def pair_icons(unit: str) -> dict[str, str]:
    """role -> icon as unit X's dashboard API sees the pair."""
    with client(unit) as c:
        return {u["role"]: u["icon"] for u in c.get("/api/v1/pair").json()}
