"""HA core with two real daemons in the lab (default timers: CARP advbase 1, master down 3 s,
preferred none): election, SIGKILL/SIGTERM of the active unit, link loss on each interface,
multicast blocked with the heartbeat cable up, no failback, bad adverts counted, notify hooks."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from carpool.lab.topology import (
    CLIENT,
    SHARED_LAN,
    SHARED_LAN6,
    SHARED_SRV,
    SHARED_SRV6,
    UNIT_ADDR,
    mac_for,
)

NOTIFY_DIR = Path("/run/carpool-test-notify")
LAB_OPTIONS = {
    "overrides": {u: {"unit.notify": str(NOTIFY_DIR / f"notify-{u}.sh")} for u in ("a", "b")}
}
SHARED = {SHARED_LAN, SHARED_SRV, SHARED_LAN6, SHARED_SRV6}  # the lab is dual-stack
VIP = SHARED_LAN.split("/")[0]
TAKEOVER = 10.0  # s: master down (3 s) + detection + settling, with room for a loaded machine


@pytest.fixture(scope="module", autouse=True)
def notify_scripts():
    """Notify hooks that record `new|old|reason` per unit (autouse: exist before the lab)."""
    NOTIFY_DIR.mkdir(parents=True, exist_ok=True)
    for unit in ("a", "b"):
        script = NOTIFY_DIR / f"notify-{unit}.sh"
        script.write_text(
            f'#!/bin/sh\nprintf \'%s|%s|%s\\n\' "$1" "$2" "$3" >> {NOTIFY_DIR}/{unit}.log\n'
        )
        script.chmod(0o755)
    yield
    shutil.rmtree(NOTIFY_DIR, ignore_errors=True)


def held(lab, unit: str) -> set[str]:
    """The shared addresses configured in the unit's namespace (the kernel's view)."""
    out = lab.exec(unit, ["ip", "-j", "addr", "show"], check=True).stdout
    found = {
        f"{a['local']}/{a['prefixlen']}"
        for link in json.loads(out)
        for a in link.get("addr_info", [])
    }
    return found & SHARED


def other(unit: str) -> str:
    return "b" if unit == "a" else "a"


def wait_holder(lab, unit: str, timeout: float = TAKEOVER) -> None:
    """Wait until `unit` holds every shared address and the other unit none."""
    lab.wait_for(
        lambda: held(lab, unit) == SHARED and not held(lab, other(unit)),
        timeout,
        what=f"unit {unit} holds {sorted(SHARED)} and unit {other(unit)} none",
    )


def settled(lab) -> str:
    master = lab.wait_for_master()
    wait_holder(lab, master)
    return master


def settled_on_b(lab) -> str:
    """b the master: it wins two masters (the higher address, preferred = none), so a test that
    makes two masters knows which one stays. Whoever won the start race hands over if need be."""
    if settled(lab) != "b":
        lab.exec("a", ["carpool", "failover"], check=True)
        wait_holder(lab, "b")
    return "b"


def test_election_settles_one_master_holding_everything(healed_lab):
    lab = healed_lab
    master = settled(lab)
    backup = other(master)
    assert lab.unit_status(backup)["shared_held"] == []
    # the daemon's view follows the kernel's once its netlink job reports back
    lab.wait_for(
        lambda: set(lab.unit_status(master)["shared_held"]) == SHARED,
        5,
        what=f"unit {master} reports {sorted(SHARED)} held",
    )
    assert lab.reaches(CLIENT, VIP)
    lab.wait_for(
        lambda: all(p["advert_alive"] for p in lab.unit_status(backup)["partner"].values()),
        5,
        what=f"unit {backup} hears adverts on every interface",
    )
    status = lab.unit_status(backup)
    for name, partner in status["partner"].items():
        assert partner["advert_alive"], f"backup hears no adverts on {name}: {partner}"
    assert lab.unit_status(master)["counters"]["adverts_sent"] > 0
    assert not status["drops"], f"a healthy lab drops nothing: {status['drops']}"


def test_an_idle_pair_does_its_housekeeping_in_the_advert_turns(healed_lab):
    """The watchdog's pulse and the partner's echoes ride on the loop's advert turns (sent by
    the active unit, heard by the standby): their backstop timers stay unused while adverts
    flow, and the echoes still show the partner on every interface. An idle loop wakes for
    its adverts and little else."""
    lab = healed_lab
    settled(lab)

    def rides(unit: str) -> dict:
        return lab.unit_status(unit)["loop"]["rides"]["counters"]

    def echoes_ok(unit: str) -> bool:
        return all(p.get("ping_ok") for p in lab.unit_status(unit)["partner"].values())

    def relay_checks(unit: str) -> int:
        return lab.unit_status(unit)["relay"]["counters"].get("checks_timed", 0)

    lab.wait_for(lambda: echoes_ok("a") and echoes_ok("b"), 5, what="the partner answers")
    before = {u: rides(u) for u in ("a", "b")}
    checks = {u: relay_checks(u) for u in ("a", "b")}
    lab.wait_for(
        lambda: all(rides(u)["ridden"] >= before[u]["ridden"] + 15 for u in ("a", "b")),
        12,
        what="the pulse and the echoes ridden for 5 s (3 a second)",
    )
    after = {u: rides(u) for u in ("a", "b")}
    # (at most one: an advert late on a loaded machine, the settling's last check; without
    # the turns every one of the 15 is a backstop's)
    backstops = {u: after[u]["backstop"] - before[u]["backstop"] for u in after}
    assert max(backstops.values()) <= 1, backstops
    # nor does the check for a silent partner (relayed adverts) fire while adverts come: each
    # round pushes it back (it fired once an advert interval: 5 in the window)
    timed = {u: relay_checks(u) - checks[u] for u in checks}
    assert max(timed.values()) <= 1, timed
    assert lab.unit_status("a")["loop"]["rides"]["rides"] == ["pulse", "partner echoes"]


def _managed(lab, unit: str) -> dict[str, list[int]]:
    """The unit's HAProxy and conntrackd processes (by their command lines)."""
    from carpool.lab.ns import pids_in
    from carpool.lab.topology import unit_ns

    found: dict[str, list[int]] = {"haproxy": [], "conntrackd": []}
    for pid in pids_in([unit_ns(unit)])[unit_ns(unit)]:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue  # gone meanwhile
        name = os.path.basename(argv[0].decode(errors="replace"))
        if name in found:
            found[name].append(pid)
    return found


def test_sigkill_of_active_moves_addresses_and_supervisor_withdraws(healed_lab):
    lab = healed_lab
    master = settled(lab)
    before = _managed(lab, master)
    lab.kill(master)
    wait_holder(lab, other(master))
    assert lab.wait_for(
        lambda: lab.unit_status(other(master))["state"] == "master",
        5,
        what="survivor reports master",
    )
    # the dead worker's HAProxy and conntrackd went with it (none left serving unmanaged)
    lab.wait_for(
        lambda: not set(sum(_managed(lab, master).values(), [])) & set(sum(before.values(), [])),
        5,
        what=f"the killed worker's processes gone (were {before})",
    )
    lab.heal()
    # no failback with preferred none: the restarted unit stays backup
    assert lab.wait_for_master() == other(master)


def test_sigterm_of_active_bows_out(healed_lab):
    lab = healed_lab
    master = settled(lab)
    lab.term(master)
    wait_holder(lab, other(master))
    reason = lab.unit_status(other(master))["reason"]
    assert "bowed out" in reason, f"takeover should follow the bow-out advert: {reason}"
    lab.heal()


@pytest.mark.parametrize("iface", ["eth0", "eth2"])
def test_link_loss_on_any_interface_moves_all_addresses(healed_lab, iface):
    lab = healed_lab
    master = settled(lab)
    lab.link_down(master, iface)
    wait_holder(lab, other(master))
    old = lab.unit_status(master)
    assert old["state"] == "backup"
    assert f"{iface}: link down" in old["demote_reasons"]
    assert f"{iface}: link down" in old["reason"], old["reason"]
    assert "bowed out" not in lab.unit_status(other(master))["reason"]
    lab.heal()


def taken_over_fast(lab, fault) -> tuple[str, float]:
    """fault(master) on a settled pair whose standby hears hellos: (the survivor's reason for
    taking over, seconds from the fault to its takeover)."""
    master = settled(lab)
    survivor = other(master)
    lab.wait_for(
        lambda: lab.unit_status(survivor)["liveness"]["state"] == "alive", 5, what="hellos heard"
    )
    start = time.monotonic()
    fault(master)
    lab.wait_for(
        lambda: lab.unit_status(survivor, timeout=0.5)["state"] == "master", 3, what="takeover"
    )
    took = time.monotonic() - start
    return lab.unit_status(survivor)["reason"], took


def test_power_loss_is_seen_on_the_heartbeat_link_long_before_master_down(healed_lab):
    """The fast detector (ha/liveness.py): the cable loses carrier, no other path answers,
    the standby takes over in well under the 3 s master-down."""
    reason, took = taken_over_fast(healed_lab, healed_lab.crash)
    assert "partner gone" in reason and "no answer on eth0, eth2" in reason
    assert took < 1.5, f"{took:.3f} s (the advert timer alone: 3 s)"
    healed_lab.heal()


def test_a_frozen_unit_is_seen_by_its_missing_hellos(healed_lab):
    """A hung event loop (the worker stopped, links up): no hello for 2 x 250 ms (automatic),
    no answer to the queries on the other paths: the standby takes over before master-down."""
    reason, took = taken_over_fast(healed_lab, healed_lab.freeze)
    assert "nothing heard on the heartbeat link" in reason
    assert took < 1.5, f"{took:.3f} s (the advert timer alone: 3 s)"
    healed_lab.heal()


def test_a_new_fast_detector_setting_runs_at_once_on_both_units(healed_lab):
    """ha.liveness_ms changed on a running pair: each unit's detector runs the new interval as
    the version is applied (it used to keep the one it started with until a restart, while
    status and the document said otherwise), and nothing moves."""
    lab = healed_lab
    master = settled(lab)
    standby = other(master)
    before = lab.unit_status(master)["config"]["version"]

    def interval(unit: str) -> int:
        return lab.unit_status(unit)["liveness"]["interval_ms"]

    def hellos() -> int:
        return lab.unit_status(master)["liveness"]["counters"]["hellos_sent"]

    proc = lab.exec(master, ["carpool", "config", "set", "ha.liveness_ms", "100"])
    assert proc.returncode == 0, proc.stderr
    try:
        lab.wait_for(lambda: interval("a") == interval("b") == 100, 10, what="100 ms on both")
        # sent at the new rate: 8 hellos within 1.5 s (at 250 ms there would be 6)
        start = hellos()
        lab.wait_for(lambda: hellos() >= start + 8, 1.5, what="hellos every 100 ms")
        lab.wait_for(
            lambda: lab.unit_status(standby)["liveness"]["state"] == "alive",
            5,
            what="the standby hears the new hellos",
        )
        assert lab.master() == master
    finally:
        lab.exec(master, ["carpool", "config", "rollback", str(before)], check=True)
        lab.wait_for(lambda: interval("a") == interval("b") == 250, 10, what="automatic again")
        # a new detector judges once it has heard a hello: the next test finds it judging
        lab.wait_for(
            lambda: lab.unit_status(standby)["liveness"]["state"] == "alive",
            5,
            what="the rebuilt standby detector hears hellos",
        )


def test_liveness_lost_on_the_cable_and_one_path_moves_nothing(healed_lab):
    """Hellos dropped on the heartbeat link and queries on eth0: the partner answers on eth2,
    so the standby knows the cable path failed, not the partner — no takeover."""
    lab = healed_lab
    master = settled(lab)
    standby = other(master)
    rules = [
        ("eth1", standby),  # the hellos the standby would hear
        ("eth0", master),  # the standby's queries on eth0
    ]
    # the standby judges only once it has heard a hello in its role
    lab.wait_for(
        lambda: lab.unit_status(standby)["liveness"]["state"] == "alive", 5, what="hellos heard"
    )
    before = lab.unit_status(standby)["liveness"]["counters"]
    try:
        for iface, unit in rules:
            lab.exec(unit, ["nft", "-f", "-"], check=True, input=_DROP_LIVENESS.format(iface=iface))
        lab.wait_for(
            lambda: lab.unit_status(standby)["liveness"]["counters"]["cut"] >= before["cut"] + 2,
            10,
            what="the standby asked twice and heard an answer each time",
        )
        status = lab.unit_status(standby)["liveness"]
        assert "answers on eth2" in status["reason"] or status["state"] == "alive", status
        assert lab.states() == {master: "master", standby: "backup"}
        assert status["counters"]["gone"] == before["gone"]
    finally:
        for _iface, unit in rules:
            lab.exec(unit, ["nft", "delete", "table", "inet", "cp_test_liveness"])


_DROP_LIVENESS = """table inet cp_test_liveness {{
    chain input {{
        type filter hook input priority -300; policy accept;
        iifname "{iface}" udp dport 6975 drop
    }}
}}
"""


def test_a_master_whose_hellos_stop_everywhere_costs_one_takeover_not_one_a_second(healed_lab):
    """The master's liveness datagrams gone on every path (UDP 6975 dropped both ways on it:
    as a partner without the detector, mid-upgrade, or with a dead hello thread) while its
    adverts go on: the standby judges it gone at most once, then leaves it to the advert
    timer — not a takeover 0.5 s after each advert, lost again at the next one."""
    lab = healed_lab
    master = settled_on_b(lab)  # a wrong verdict leaves two masters: the master must win them
    standby = other(master)
    before = lab.unit_status(standby)["liveness"]["counters"]["gone"]
    try:
        lab.exec(master, ["nft", "-f", "-"], check=True, input=_SILENT_LIVENESS)
        deadline = time.monotonic() + 6.0  # six adverts
        while time.monotonic() < deadline:
            time.sleep(0.5)
        gone = lab.unit_status(standby)["liveness"]["counters"]["gone"] - before
        assert gone <= 1, f"the standby judged the master gone {gone} times in 6 s"
        lab.wait_for(
            lambda: lab.states() == {master: "master", standby: "backup"},
            TAKEOVER,
            what=f"unit {master} master again, unit {standby} backup",
        )
    finally:
        lab.exec(master, ["nft", "delete", "table", "inet", "cp_test_liveness"])


_SILENT_LIVENESS = """table inet cp_test_liveness {
    chain input {
        type filter hook input priority -300; policy accept;
        udp dport 6975 drop
    }
    chain output {
        type filter hook output priority -300; policy accept;
        udp dport 6975 drop
    }
}
"""


def test_cut_heartbeat_cable_keeps_the_master(healed_lab):
    """Both ends of the cable lose carrier: both units are equally demoted, so the handover
    rule keeps the master (no needless failover, never a moment without a master); the fast
    detector asks the partner on the other paths and hears it: a cut, not a dead partner."""
    lab = healed_lab
    master = settled(lab)
    # the detector judges a cut only once it has heard a hello in its role (a hello every
    # 250 ms: a unit that changed roles a moment ago may not have one yet)
    lab.wait_for(
        lambda: lab.unit_status(other(master))["liveness"]["state"] == "alive",
        5,
        what="the standby hears hellos",
    )
    gone = lab.unit_status(other(master))["liveness"]["counters"]["gone"]
    lab.cut_heartbeat()
    lab.wait_for(
        lambda: all("eth1: link down" in lab.unit_status(u)["demote_reasons"] for u in ("a", "b")),
        5,
        what="both units demoted by eth1",
    )
    deadline = time.monotonic() + 3.0 + 1.0  # a master-down period and an advert
    while time.monotonic() < deadline:
        assert lab.states() == {master: "master", other(master): "backup"}
        time.sleep(0.1)
    assert held(lab, master) == SHARED and not held(lab, other(master))
    liveness = lab.unit_status(other(master))["liveness"]
    assert liveness["state"] == "cut" and liveness["counters"]["gone"] == gone, liveness
    lab.heal()


def test_a_master_that_yields_after_a_split_makes_the_winner_announce(healed_lab):
    """Two masters after a partition; the weaker one announced last, so the clients send to it.
    When the split heals, the weaker one may hear the winner's advert before the winner hears
    one of its own (then it never does: a backup is silent). Its bow-out on yielding is what
    tells the winner to announce again; before, the clients kept the loser's MAC until their
    neighbour entry was probed again (a 3.1 s outage in a chaos campaign, seed 24257)."""
    lab = healed_lab
    settled_on_b(lab)
    assert lab.unit_status("a")["auth"]["partner_form"] == "carpool"
    lab.exec(CLIENT, ["ping", "-c", "1", "-W", "2", VIP], check=True)
    lab.partition()
    lab.wait_for(
        lambda: lab.states() == {"a": "master", "b": "master"}, TAKEOVER, what="two masters"
    )
    lab.wait_for(
        lambda: lab.neighbour_mac(CLIENT, VIP) == mac_for(UNIT_ADDR["a"]["eth0"]),
        5,
        what="the client sent to a",
    )
    # b hears none of a's adverts from now on but a bow-out (flags 0x01 in the carpool form),
    # nor the adverts the sync connection relays
    table = "carpool_test_yield"
    rules = "meta l4proto 112 @th,16,8 != 1 drop; tcp dport 6973 drop; tcp sport 6973 drop;"
    lab.exec(
        "b",
        ["nft", "-f", "-"],
        input=f"table inet {table} {{ chain input {{ type filter hook input priority -300; "
        f"policy accept; {rules} }} ; }}\n",
        check=True,
    )
    try:
        lab.unblock()
        lab.exec("a", ["ip", "link", "set", "eth1", "up"], check=True)
        lab.link_up("b", "eth1")  # (operational once both ends are up)
        lab.wait_for(
            lambda: lab.states() == {"a": "backup", "b": "master"}, 5, what="a yields to b"
        )
        lab.wait_for(
            lambda: lab.neighbour_mac(CLIENT, VIP) == mac_for(UNIT_ADDR["b"]["eth0"]),
            2.0,
            what="b announced again",
        )
        lab.exec(CLIENT, ["ping", "-c", "1", "-W", "1", VIP], check=True)
    finally:
        lab.exec("b", ["nft", "delete", "table", "inet", table])
    lab.heal()


def test_multicast_blocked_with_heartbeat_up_never_two_masters(healed_lab):
    lab = healed_lab
    master = settled(lab)
    lab.block_multicast()
    # Watch for three master-down periods: a unit that heard nothing on lan/srv must still
    # hear the partner on the heartbeat cable and stay backup.
    deadline = time.monotonic() + 3 * 3.0 + 1.0
    samples = 0
    while time.monotonic() < deadline and samples < 1000:
        samples += 1
        time.sleep(0.02)
        states = lab.states()
        assert list(states.values()).count("master") <= 1, f"two masters: {states}"
        assert states[master] == "master", f"the master changed: {states}"
        assert not held(lab, other(master)), "the backup took shared addresses"
    backup = lab.unit_status(other(master))["partner"]
    assert backup["eth1"]["advert_alive"], backup["eth1"]
    assert not backup["eth0"]["advert_alive"] and not backup["eth2"]["advert_alive"], backup
    assert samples > 10


def test_no_failback_with_preferred_none(healed_lab):
    lab = healed_lab
    first = settled(lab)
    lab.crash(first)  # its links are down: what it still holds is unreachable
    lab.wait_for(
        lambda: held(lab, other(first)) == SHARED,
        TAKEOVER,
        what=f"unit {other(first)} takes every shared address",
    )
    lab.heal()  # power the crashed unit on again
    # The returning unit must not take over; watch it for two master-down periods.
    assert lab.wait_for_master() == other(first)
    deadline = time.monotonic() + 2 * 3.0
    while time.monotonic() < deadline:
        assert lab.states()[first] == "backup"
        time.sleep(0.2)
    assert held(lab, first) == set()


FORGE = r"""
import socket, sys
from ipaddress import IPv4Address
from carpool.ha.carp import CarpAdvert
from carpool.ha.ipv4 import Ipv4Packet
kind, vhid, key, vip = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode(), sys.argv[4]
key = b"not-the-lab-secret" if kind == "secret" else key
packet = bytearray(CarpAdvert.build(key, vhid, 1, 0, 0, 7, [IPv4Address(vip)]).pack())
if kind == "checksum":
    packet[6] ^= 0xFF
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)  # IP_HDRINCL
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth0")
for src in sys.argv[5:]:  # each unit's address, as the other hears it (spoofed)
    datagram = Ipv4Packet(IPv4Address(src), IPv4Address("224.0.0.18"),
                          254 if kind == "ttl" else 255, 112, bytes(packet)).pack()
    for _ in range(5):
        s.sendto(datagram, ("224.0.0.18", 0))
"""


@pytest.mark.parametrize(
    "kind,reason,sources",
    [
        ("secret", "bad_hmac", ("198.18.0.11", "198.18.0.12")),  # as from the partner
        ("ttl", "bad_ttl", ("198.18.0.11", "198.18.0.12")),
        ("checksum", "bad_checksum", ("198.18.0.11", "198.18.0.12")),
        ("stranger", "not_partner", ("198.18.0.100",)),  # the right secret, not the partner
    ],
)
def test_forged_adverts_are_dropped_and_counted(healed_lab, kind, reason, sources):
    lab = healed_lab
    master = settled(lab)
    cfg = lab.unit_config("a")
    before = {u: lab.unit_status(u)["drops"].get(reason, 0) for u in ("a", "b")}
    lab.exec(
        CLIENT,
        [
            lab.python(),
            "-c",
            FORGE,
            kind,
            str(cfg["ha"]["vhid"]),
            cfg["unit"]["secret"],
            VIP,
            *sources,
        ],
        check=True,
    )
    lab.wait_for(
        lambda: all(
            lab.unit_status(u)["drops"].get(reason, 0) >= before[u] + 5 for u in ("a", "b")
        ),
        5,
        what=f"both units count 5 {reason} drops",
    )
    assert lab.states() == {master: "master", other(master): "backup"}


def test_notify_hook_runs_with_new_old_reason(healed_lab):
    lab = healed_lab
    master = settled(lab)
    lab.term(master)
    wait_holder(lab, other(master))

    def lines(unit):
        path = NOTIFY_DIR / f"{unit}.log"
        return path.read_text().splitlines() if path.exists() else []

    lab.wait_for(
        lambda: any(
            line.startswith("master|backup|") and "bowed out" in line
            for line in lines(other(master))
        ),
        5,
        what="notify master|backup|<reason> on the new master",
    )
    lab.wait_for(
        lambda: any(line.startswith("init|master|") for line in lines(master)),
        5,
        what="notify init|master on the stopped unit",
    )
    lab.heal()
