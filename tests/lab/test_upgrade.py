"""A rolling upgrade (the hardening issue): unit b runs the release before the carpool advert
(CARP adverts, sync protocol 1, taken from this repository's history), unit a runs this tree.
The pair still elects one active unit and fails over both ways; unit a speaks both advert
forms and says so; config sync is down and says why."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from carpool.lab.units import ipv4_only

# the old release knows no IPv6: the pair's document is IPv4-only (as it was before the upgrade)
LAB_OPTIONS = {"overrides": ipv4_only()}
# the last commit with CARP adverts between carpool units and sync protocol 1
OLD_RELEASE = "99152230982b8d7f9e77d27a0349617a72284201"
REPO = Path(__file__).resolve().parents[2]


# the last commit where ha.liveness_* defaulted to 100 and 3 (sent, and left out of the hash)
BEFORE_AUTOMATIC = "111b62d6e3df6e22db09c4ac7d171292102a3531"


def release_src(tmp_path_factory, commit: str) -> str:
    """The src tree of an earlier commit, from this clone's history."""

    def git(*args: str, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(REPO), *args], timeout=60, **kw)

    if git("cat-file", "-e", f"{commit}^{{commit}}", capture_output=True).returncode:
        pytest.skip(f"this clone has no history back to {commit[:12]} (a shallow clone)")
    dest = tmp_path_factory.mktemp(f"release-{commit[:12]}")
    archive = git("archive", commit, "src", capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True, timeout=60)
    return str(dest / "src")


@pytest.fixture(scope="module")
def old_src(tmp_path_factory) -> str:
    return release_src(tmp_path_factory, OLD_RELEASE)


def one_master(lab, expect: str | None = None) -> str | None:
    states = lab.states()
    masters = [u for u, s in states.items() if s == "master"]
    if None in states.values() or len(masters) != 1:
        return None
    return masters[0] if expect in (None, masters[0]) else None


def other(unit: str) -> str:
    return "b" if unit == "a" else "a"


def restart(lab, unit: str, src: str | None) -> None:
    """Stop the unit (it bows out) and start it on `src` (None: this tree)."""
    lab.stop_unit(unit)
    if src is None:
        lab.unit_src.pop(unit, None)
    else:
        lab.unit_src[unit] = src
    lab.start_unit(unit)


def fail_over(lab, active: str) -> str:
    """Stop the active unit: the other takes over; start it again as the standby."""
    standby = other(active)
    lab.stop_unit(active)
    lab.wait_for(
        lambda: lab.unit_status(standby).get("state") == "master",
        10,
        what=f"unit {standby} takes over from {active}",
    )
    assert lab.unit_status(standby)["shared_held"], lab.unit_status(standby)
    lab.start_unit(active)
    lab.wait_for(lambda: one_master(lab, standby), 20, what=f"unit {active} back as standby")
    return standby


def config_key(lab, unit: str) -> tuple:
    c = lab.unit_status(unit)["config"]
    return (c["version"], c["hash"])


def test_the_readme_rolling_upgrade_keeps_one_active_unit_and_the_configuration(lab, old_src):
    """Both units on the release before; upgrade the standby (its stored configuration stays
    intact), fail over both ways, upgrade the other: one active unit throughout, the units
    speak both advert forms while mixed and only the carpool advert after, sync comes back."""
    for unit in ("a", "b"):
        lab.stop_unit(unit)
    lab.unit_src.update(a=old_src, b=old_src)
    try:
        lab.start_units()
        active = lab.wait_for(lambda: one_master(lab), 20, what="one master, both old")
        stored = config_key(lab, other(active))
        # 1. upgrade the standby
        restart(lab, other(active), None)
        new = other(active)
        lab.wait_for(lambda: one_master(lab, active), 20, what="the old unit still active")
        assert config_key(lab, new) == stored  # the old release's store, intact
        lab.wait_for(
            lambda: lab.unit_status(new)["auth"]["partner_form"] == "carp",
            10,
            what="the new unit hears the older advert form",
        )
        status = lab.unit_status(new)
        assert status["auth"]["sending"] == ["carpool", "carp"], status["auth"]
        assert "older advert form" in status["warning_kinds"], status["warnings"]
        # 2. fail over both ways: old -> new, new -> old
        assert fail_over(lab, active) == new
        lab.wait_for(  # the active unit runs the sync client
            lambda: "same release" in (lab.unit_status(new)["sync"]["last_error"] or ""),
            15,
            what="sync down, and why",
        )
        assert fail_over(lab, new) == active
        # 3. fail over to the new unit, upgrade the other
        assert fail_over(lab, active) == new
        restart(lab, active, None)
        lab.wait_for(lambda: one_master(lab, new), 20, what="the upgraded unit still active")
        for unit in ("a", "b"):
            lab.wait_for(
                lambda unit=unit: lab.unit_status(unit)["auth"]["sending"] == ["carpool"],
                10,
                what=f"unit {unit} speaks only the carpool advert",
            )
        lab.wait_for(
            lambda: (
                config_key(lab, "a") == config_key(lab, "b")
                and lab.unit_status(new)["sync"]["state"] == "in sync"
            ),
            20,
            what="sync back, both at one version",
        )
        assert fail_over(lab, new) == active
    finally:
        lab.unit_src.clear()
        for unit in ("a", "b"):
            lab.stop_unit(unit)
        lab.start_units()


def test_a_pair_mid_upgrade_syncs_across_the_automatic_fast_detector(lab, tmp_path_factory):
    """Unit b on the release before ha.liveness_* became automatic (it sends 100 / 3 and
    leaves them out of its hash), unit a on this tree (unset, left out): a version committed on
    either unit reaches the other with the hash both agree on."""
    before = release_src(tmp_path_factory, BEFORE_AUTOMATIC)
    restart(lab, "b", before)
    try:
        if lab.wait_for(lambda: one_master(lab), 20, what="one master, a new and b before") == "b":
            fail_over(lab, "b")  # changes are made on the active unit: a first

        def set_on(unit: str, value: str) -> None:
            src = before if unit == "b" else None
            argv = ["carpool", "config", "set", "ha.garp_count", value]
            if src is not None:  # the release's own command line
                argv = ["env", f"PYTHONPATH={src}", lab.python(), "-m", "carpool.cli", *argv[1:]]
            answer = lab.exec(unit, argv)
            assert answer.returncode == 0, answer.stderr

        for unit, value in (("a", "4"), ("b", "5")):
            if unit == "b":
                assert fail_over(lab, "a") == "b"
            was = config_key(lab, unit)
            set_on(unit, value)
            made = lab.wait_for(
                lambda unit=unit, was=was: (k := config_key(lab, unit)) != was and k,
                10,
                what=f"a new version on unit {unit}",
            )
            lab.wait_for(
                lambda made=made: config_key(lab, "a") == config_key(lab, "b") == made,
                20,
                what=f"the version committed on {unit} on both units",
            )
        assert lab.unit_status("a")["liveness"]["interval_ms"] == 250  # automatic here
        assert lab.unit_status("b")["liveness"]["interval_ms"] == 100  # its default there
    finally:
        restart(lab, "b", None)
