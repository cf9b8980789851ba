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


def client(unit: str, auth=AUTH, timeout: float = 5.0, lab=None) -> httpx.Client:
    """An API client of unit a or b (self-signed certificate: not verified), as a script is
    one: X-Requested-With on a POST (an answer 401 still has its Basic challenge). With lab:
    at the URL that lab's units answer on (IPv6 in an IPv6-only lab)."""
    return httpx.Client(
        base_url=wui_url(unit) if lab is None else lab.wui_url(unit),
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
                with client(unit, timeout=1.0, lab=lab) as c:
                    if c.get("/api/openapi.json").status_code != 200:
                        return False
            except httpx.HTTPError:
                return False
        return True

    lab.wait_for(answers, timeout, interval=0.2, what=f"the WUIs of {units} answer")


def login(page, base: str, password: str = WUI_PASSWORD) -> None:
    """Log a browser page in to the WUI at base (e.g. lab.wui_url("a"))."""
    page.goto(base + "login")
    page.fill("input[name=username]", WUI_USER)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    if password == WUI_PASSWORD:
        page.wait_for_url(base)


def pair_icons(unit: str) -> dict[str, str]:
    """role -> icon as unit X's dashboard API sees the pair."""
    with client(unit) as c:
        return {u["role"]: u["icon"] for u in c.get("/api/v1/pair").json()}
