"""Preferred unit (failback) and virtual MAC, with two real daemons in the lab:
preferred = "first" (unit a) with vmac on. The no-failback default is in test_failover.py."""

from __future__ import annotations

import json

from carpool.lab.topology import CLIENT, SHARED_LAN, SHARED_LAN6, SHARED_SRV, SHARED_SRV6

LAB_OPTIONS = {"preferred": "first", "vmac": True}
SHARED = {SHARED_LAN, SHARED_SRV, SHARED_LAN6, SHARED_SRV6}  # IPv6 on the macvlans too
VIP = SHARED_LAN.split("/")[0]
VIP6 = SHARED_LAN6.split("/")[0]
VMAC = "00:00:5e:00:01:01"  # the lab's vhid 1
TAKEOVER = 10.0


def held(lab, unit: str) -> set[str]:
    out = lab.exec(unit, ["ip", "-j", "addr", "show"], check=True).stdout
    return {
        f"{a['local']}/{a['prefixlen']}"
        for link in json.loads(out)
        for a in link.get("addr_info", [])
    } & SHARED


def vmac_links(lab, unit: str) -> list[str]:
    out = lab.exec(unit, ["ip", "-j", "link", "show"], check=True).stdout
    return [link["ifname"] for link in json.loads(out) if link.get("address") == VMAC]


def client_sees_vip_at(lab) -> str | None:
    """The MAC the client resolved the VIP to (after a ping), or None."""
    if not lab.ping(CLIENT, VIP, count=1, timeout=1.0):
        return None
    return lab.neighbour_mac(CLIENT, VIP)


def test_preferred_unit_wins_and_carries_the_virtual_mac(healed_lab):
    lab = healed_lab
    assert lab.wait_for_master() == "a"
    lab.wait_for(
        lambda: held(lab, "a") == SHARED and not held(lab, "b"),
        TAKEOVER,
        what="unit a holds every shared address",
    )
    assert len(vmac_links(lab, "a")) == 2  # one macvlan per interface with shared addresses
    assert vmac_links(lab, "b") == []
    assert lab.unit_status("a")["vmac"] == VMAC
    assert lab.reaches(CLIENT, VIP)  # pinged until it answers: the client resolved it
    assert lab.neighbour_mac(CLIENT, VIP) == VMAC
    assert lab.reaches(CLIENT, VIP6)  # neighbour discovery answered by the macvlan
    assert lab.neighbour_mac(CLIENT, VIP6) == VMAC


def test_failover_keeps_the_mac_and_preferred_unit_fails_back(healed_lab):
    lab = healed_lab
    assert lab.wait_for_master() == "a"
    lab.kill("a")
    lab.wait_for(
        lambda: held(lab, "b") == SHARED and not held(lab, "a"),
        TAKEOVER,
        what="unit b takes over, unit a's supervisor withdrew",
    )
    assert len(vmac_links(lab, "b")) == 2
    # unit a's supervisor bows out first, then removes its macvlans (each deletion waits for
    # the kernel's RCU grace period): gone shortly after the takeover
    lab.wait_for(lambda: vmac_links(lab, "a") == [], 5, what="unit a's macvlans removed")
    # The client's neighbour entry stays valid: same MAC, now answered by unit b.
    assert lab.wait_for(lambda: client_sees_vip_at(lab) == VMAC, 5, what="VIP answers at vmac")
    lab.heal()  # restarts unit a: preferred, so it preempts
    lab.wait_for(
        lambda: lab.master() == "a" and held(lab, "a") == SHARED and not held(lab, "b"),
        TAKEOVER,
        what="unit a fails back",
    )
    reason = lab.unit_status("a")["reason"]
    assert reason.startswith("preempting"), reason
    # b removes its macvlans after it released the addresses, as a did above
    lab.wait_for(lambda: vmac_links(lab, "b") == [], 5, what="unit b's macvlans removed")


def test_forced_failover_switches_gracefully_and_holds_the_preferred_unit_back(healed_lab):
    """`carpool failover` on the preferred active unit: b takes over at once on the bow-out,
    a stays standby for the hold time instead of preempting back; the standby and a unit
    whose partner is silent refuse."""
    lab = healed_lab
    assert lab.wait_for_master() == "a"
    refused = lab.exec("b", ["carpool", "failover"])
    assert refused.returncode == 1 and "not active" in refused.stderr, refused.stderr
    switched = lab.exec("a", ["carpool", "failover", "--hold", "30"])
    assert switched.returncode == 0, switched.stderr
    lab.wait_for(
        lambda: lab.master() == "b" and held(lab, "b") == SHARED and not held(lab, "a"),
        2.0,
        what="unit b takes over on the bow-out",
    )
    assert "bowed out" in lab.unit_status("b")["reason"], lab.unit_status("b")["reason"]
    status_a = lab.unit_status("a")
    assert status_a["state"] == "backup" and "forced failover" in status_a["reason"], status_a
    # Preferred, yet no preempting back while held: a hears b's adverts and stays standby.
    adverts = status_a["partner"]["eth0"]["adverts_heard"]
    lab.wait_for(
        lambda: lab.unit_status("a")["partner"]["eth0"]["adverts_heard"] >= adverts + 3,
        10,
        what="unit a hears three of b's adverts",
    )
    assert lab.master() == "b"
    lab.crash("a")
    lab.wait_for(
        lambda: not any(p["ping_ok"] for p in lab.unit_status("b")["partner"].values()),
        10,
        what="unit b sees its partner's pings fail",
    )
    lonely = lab.exec("b", ["carpool", "failover"])
    assert lonely.returncode == 1 and "answers no ping" in lonely.stderr, lonely.stderr
