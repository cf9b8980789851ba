"""carpool doctor on the live lab (virtual MACs on, so the mac checks run too): a healthy lab
passes every check; each fault fails the checks of its topic and no other; the daemon's status
warns when adverts are lost on every path (they then travel over 6973: no master-master)."""

from __future__ import annotations

import json
import time

import pytest

from carpool.lab.topology import CLIENT

LAB_OPTIONS = {"vmac": True}
TOPICS = (
    "multicast",
    "icmp",
    "6973",
    "mac",
    "heartbeat",
    "vhid",
    "ha-check",
    "version",
    "clock",
    "latency",
)


def doctor(lab, unit: str) -> tuple[int, list[dict]]:
    proc = lab.exec(unit, ["carpool", "doctor", "--json"], timeout=60)
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, json.loads(proc.stdout)["checks"]


def failed(checks: list[dict]) -> list[str]:
    return [c["name"] for c in checks if not c["ok"]]


def test_healthy_lab_passes_every_check_on_both_units(healed_lab):
    lab = healed_lab
    active = lab.wait_for_master()
    for unit in (active, "b" if active == "a" else "a"):
        code, checks = doctor(lab, unit)
        assert code == 0 and failed(checks) == [], checks
        names = " ".join(c["name"] for c in checks)
        for topic in TOPICS:
            assert topic in names, (topic, names)
        assert all(set(c) == {"name", "ok", "detail", "hint"} for c in checks)
    text = lab.exec(active, ["carpool", "doctor"])
    assert text.returncode == 0 and "checks passed" in text.stdout, text.stdout


@pytest.mark.parametrize(
    "fault, topic",
    [
        ("block_multicast", "multicast"),
        ("block_icmp", "icmp"),
        ("block_sync", "6973 sync port reachable"),
        ("block_vmac", "mac"),
        ("cut_heartbeat", "heartbeat"),
    ],
)
def test_each_fault_fails_its_own_checks_and_no_other(healed_lab, fault, topic):
    lab = healed_lab
    active = lab.wait_for_master()
    getattr(lab, fault)()
    for unit in ("a", "b"):
        code, checks = doctor(lab, unit)
        bad = failed(checks)
        assert code == 1 and bad, (unit, checks)
        assert all(name.startswith(topic) for name in bad), (unit, fault, bad)
        assert all(c["hint"] for c in checks if not c["ok"]), checks
    if fault == "block_vmac":  # the unit holding the virtual MAC sends; both see the failure
        assert any(n.startswith("mac eth0") for n in failed(doctor(lab, active)[1]))


def test_foreign_speaker_with_our_vhid_is_found(healed_lab):
    lab = healed_lab
    lab.wait_for_master()
    foreign = lab.spawn(
        CLIENT,
        [
            "ucarp",
            "-i",
            "eth0",
            "-s",
            "198.18.0.100",
            "-v",
            "1",
            "-p",
            "someone-else",
            "-a",
            "198.18.0.99",
            "-b",
            "1",
            "-u",
            "/bin/true",
            "-d",
            "/bin/true",
        ],
    )
    try:

        def found():
            return failed(doctor(lab, "a")[1])

        lab.wait_for(lambda: found(), 15, what="ucarp with vhid 1 advertises and is noticed")
        bad = found()
        assert bad == ["vhid eth0: unique"], bad
        status = lab.unit_status("b")
        assert any("198.18.0.100" in w and "vhid 1" in w for w in status["warnings"]), status
    finally:
        foreign.terminate()
        foreign.wait(10)
    lab.wait_for(lambda: not found(), 20, what="the silent speaker drops out of the findings")


def test_wrong_secret_is_its_own_finding(healed_lab):
    lab = healed_lab
    lab.wait_for_master()
    lab.stop_unit("b")
    lab.write_configs(overrides={"b": {"unit.secret": "not-the-pair-secret"}})
    try:
        lab.start_unit("b")
        lab.wait_for(lambda: lab.unit_status("b")["state"] != "init", 10, what="b runs")
        for unit in ("a", "b"):
            code, checks = doctor(lab, unit)
            assert failed(checks) == ["6973 secret (partner shared secret)"], (unit, checks)
    finally:
        lab.stop_unit("b")
        lab.write_configs(overrides=None)
        lab.start_unit("b")


def test_adverts_lost_on_every_path_make_no_master_master_and_are_named(healed_lab):
    """Adverts dropped on every path in both directions, ICMP and 6973 kept: the adverts
    travel over 6973 (node/relay.py), so one unit stays active; both say which paths lose
    them (before the relay both became active and warned master-master)."""
    lab = healed_lab
    active = lab.wait_for_master()
    standby = "b" if active == "a" else "a"
    lab.block_adverts()

    def both_warn():
        return all(
            any(w.startswith("adverts lost") for w in lab.unit_status(u)["warnings"])
            for u in ("a", "b")
        )

    lab.wait_for(both_warn, 20, what="both units warn that adverts are lost")
    deadline = time.monotonic() + 2 * lab.unit_status(active)["timers"]["master_down"]
    while time.monotonic() < deadline:
        assert lab.states() == {active: "master", standby: "backup"}, lab.states()
        time.sleep(0.2)
    for unit in ("a", "b"):
        warning = next(w for w in lab.unit_status(unit)["warnings"] if w.startswith("adverts lost"))
        for iface in ("eth0", "eth1", "eth2"):
            assert iface in warning, warning
    assert "only over the sync port" in next(
        w for w in lab.unit_status(standby)["warnings"] if w.startswith("adverts lost")
    )
    assert "WARNING: adverts lost" in lab.exec("a", ["carpool", "status"]).stdout
    lab.heal()
    lab.wait_for(
        lambda: not any(lab.unit_status(u)["warnings"] for u in ("a", "b")),
        30,
        what="one master again, no warnings",
    )


def test_doctor_names_the_direction_that_drops_on_every_path(healed_lab):
    """The active unit's adverts and probes dropped at the standby on every path, the other
    direction intact: the reports travel over 6973 too, so each unit's doctor fails exactly
    the broken direction of each path (before, both directions failed as "no report")."""
    lab = healed_lab
    active = lab.wait_for_master()
    standby = "b" if active == "a" else "a"
    lab.one_way(standby)
    lab.wait_for(
        lambda: any(w.startswith("adverts lost") for w in lab.unit_status(standby)["warnings"]),
        20,
        what="the standby warns that adverts are lost",
    )
    directions = {}
    for unit in (active, standby):
        _, checks = doctor(lab, unit)
        directions[unit] = {c["name"]: c for c in checks if "->" in c["name"]}
        assert len(directions[unit]) == 8, checks  # eth0 and eth2, each family, both ways
    for name, check in directions[standby].items():
        assert check["ok"] == name.endswith("us -> partner"), (standby, check)
        if not check["ok"]:
            assert "came over the sync port" in check["detail"], check
    for name, check in directions[active].items():
        assert check["ok"] == name.endswith("partner -> us"), (active, check)
        if not check["ok"]:
            assert "heard 0 of our" in check["detail"], check
    lab.heal()


def test_reboot_loop_pacifies_the_unit_until_an_admin_clears_it(healed_lab):
    lab = healed_lab
    lab.wait_for_master()
    lab.write_configs(overrides={"b": {"unit.restart_limit": 3}})
    try:
        lab.stop_unit("b")
        lab.start_unit("b")
        assert lab.exec("b", ["carpool", "pacify", "--clear"]).returncode == 0  # history: 1
        for restart in range(1, 5):
            lab.stop_unit("b")
            lab.start_unit("b")
            pacified = lab.unit_status("b")["pacified"]
            assert bool(pacified) == (restart == 4), (restart, pacified)
        assert "restarted 4 times" in pacified
        assert "PACIFIED" in lab.exec("b", ["carpool", "status"]).stdout
        assert lab.wait_for_master() == "a"
        lab.kill("a")  # a's supervisor bows out for it: b would take over at once
        lab.wait_for(
            lambda: "not taking over" in lab.unit_status("b")["reason"],
            10,
            what="b hears the bow-out and stays standby",
        )
        status = lab.unit_status("b")
        assert status["state"] == "backup" and not status["shared_held"], status
        cleared = lab.exec("b", ["carpool", "pacify", "--clear"])
        assert cleared.returncode == 0 and "cleared" in cleared.stdout, cleared
        lab.wait_for(
            lambda: lab.unit_status("b")["state"] == "master", 10, what="b takes over once cleared"
        )
    finally:
        lab.write_configs(overrides=None)


def test_the_standby_resolves_the_shared_addresses_to_the_virtual_mac_and_names_a_wrong_one(
    healed_lab,
):
    """The standby, a node on the clients' link, checks what the shared addresses of both
    families resolve to; an entry the announcements cannot replace (a static one, as a client
    that ignored them would keep) is named with its MAC."""
    lab = healed_lab
    active = lab.wait_for_master()
    standby = "b" if active == "a" else "a"
    vmac = lab.unit_status(active)["vmac"]
    assert vmac
    check = "mac the shared addresses resolve to"
    code, checks = doctor(lab, standby)
    [seen] = [c for c in checks if c["name"] == check]
    assert code == 0 and seen["ok"], checks
    for address in ("198.18.0.10", "2001:2::10", "198.18.2.1", "2001:2:0:2::1"):
        assert f"{address} -> {vmac}" in seen["detail"], seen
    wrong = "02:00:5e:00:99:99"
    entry = ["2001:2::10", "lladdr", wrong, "dev", "eth0", "nud", "permanent"]
    lab.exec(standby, ["ip", "-6", "neigh", "replace", *entry], check=True)
    try:
        code, checks = doctor(lab, standby)
        assert code == 1 and failed(checks) == [check], checks
        [seen] = [c for c in checks if c["name"] == check]
        assert f"2001:2::10 -> {wrong}, not {vmac}" in seen["detail"], seen
        assert f"find {wrong}" in seen["hint"], seen
    finally:
        lab.exec(standby, ["ip", "-6", "neigh", "del", "2001:2::10", "dev", "eth0"])
