"""A rolling upgrade (the hardening issue): unit b runs the release before the carpool advert
(CARP adverts, sync protocol 1, taken from this repository's history), unit a runs this tree.
The pair still elects one active unit and fails over both ways; unit a speaks both advert
forms and says so; config sync is down and says why."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

# the last commit with CARP adverts between carpool units and sync protocol 1
OLD_RELEASE = "99152230982b8d7f9e77d27a0349617a72284201"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def old_src(tmp_path_factory) -> str:
    def git(*args: str, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(REPO), *args], timeout=60, **kw)

    if git("cat-file", "-e", f"{OLD_RELEASE}^{{commit}}", capture_output=True).returncode:
        pytest.skip(f"this clone has no history back to {OLD_RELEASE[:12]} (a shallow clone)")
    dest = tmp_path_factory.mktemp("old-release")
    archive = git("archive", OLD_RELEASE, "src", capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True, timeout=60)
    return str(dest / "src")


def one_master(lab, expect: str | None = None) -> str | None:
    states = lab.states()
    masters = [u for u, s in states.items() if s == "master"]
    if None in states.values() or len(masters) != 1:
        return None
    return masters[0] if expect in (None, masters[0]) else None


def test_a_pair_mid_upgrade_elects_one_unit_and_fails_over_both_ways(lab, old_src):
    for unit in ("a", "b"):
        lab.stop_unit(unit)
    lab.unit_src["b"] = old_src
    try:
        lab.start_units()
        first = lab.wait_for(lambda: one_master(lab), 20, what="one master, old and new")
        lab.wait_for(
            lambda: lab.unit_status("a")["auth"]["partner_form"] == "carp",
            10,
            what="the new unit hears the older form",
        )
        new = lab.unit_status("a")
        assert new["auth"]["sending"] == ["carpool", "carp"], new["auth"]
        assert "older advert form" in new["warning_kinds"], new["warnings"]
        lab.wait_for(
            lambda: (
                "older carpool" in (lab.unit_status("a")["sync"]["last_error"] or "")
                or "sync protocol" in (lab.unit_status("a")["sync"]["last_error"] or "")
            ),
            15,
            what="sync down, and why",
        )
        # fail over both ways: stop the active unit (it bows out), the other takes over;
        # start it again as the standby; then the same from the other side
        active = first
        for _ in range(2):
            standby = "b" if active == "a" else "a"
            lab.stop_unit(active)
            lab.wait_for(
                lambda standby=standby: lab.unit_status(standby).get("state") == "master",
                10,
                what=f"unit {standby} takes over from {active}",
            )
            assert lab.unit_status(standby)["shared_held"], lab.unit_status(standby)
            lab.start_unit(active)
            lab.wait_for(
                lambda standby=standby: one_master(lab, standby),
                20,
                what=f"unit {active} back as the standby",
            )
            active = standby
        assert active == first
    finally:
        lab.unit_src.pop("b", None)
        for unit in ("a", "b"):
            lab.stop_unit(unit)
        lab.start_units()
