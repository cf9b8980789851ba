"""Preferred unit (failback) and virtual MAC, with two real daemons in the lab:
preferred = "first" (unit a) with vmac on. The no-failback default is in test_failover.py."""
from __future__ import annotations

import json

from carpool.lab.topology import CLIENT, SHARED_LAN, SHARED_SRV

LAB_OPTIONS = {"preferred": "first", "vmac": True}
SHARED = {SHARED_LAN, SHARED_SRV}
VIP = SHARED_LAN.split("/")[0]
VMAC = "00:00:5e:00:01:01"  # the lab's vhid 1
TAKEOVER = 10.0


def held(lab, unit: str) -> set[str]:
    out = lab.exec(unit, ["ip", "-j", "-4", "addr", "show"], check=True).stdout
    return {f"{a['local']}/{a['prefixlen']}" for link in json.loads(out)
            for a in link.get("addr_info", [])} & SHARED


def vmac_links(lab, unit: str) -> list[str]:
    out = lab.exec(unit, ["ip", "-j", "link", "show"], check=True).stdout
    return [link["ifname"] for link in json.loads(out) if link.get("address") == VMAC]


def client_sees_vip_at(lab) -> str | None:
    """The MAC the client resolved the VIP to (after a ping), or None."""
    if not lab.ping(CLIENT, VIP, count=1, timeout=1.0):
        return None
    out = lab.exec(CLIENT, ["ip", "-j", "neigh", "show", VIP], check=True).stdout
    entries = json.loads(out) if out.strip() else []
    return entries[0].get("lladdr") if entries else None


def test_preferred_unit_wins_and_carries_the_virtual_mac(healed_lab):
    lab = healed_lab
    assert lab.wait_for_master() == "a"
    lab.wait_for(lambda: held(lab, "a") == SHARED and not held(lab, "b"), TAKEOVER,
                 what="unit a holds every shared address")
    assert len(vmac_links(lab, "a")) == 2  # one macvlan per interface with shared addresses
    assert vmac_links(lab, "b") == []
    assert lab.unit_status("a")["vmac"] == VMAC
    assert client_sees_vip_at(lab) == VMAC


def test_failover_keeps_the_mac_and_preferred_unit_fails_back(healed_lab):
    lab = healed_lab
    assert lab.wait_for_master() == "a"
    lab.kill("a")
    lab.wait_for(lambda: held(lab, "b") == SHARED and not held(lab, "a"), TAKEOVER,
                 what="unit b takes over, unit a's supervisor withdrew")
    assert len(vmac_links(lab, "b")) == 2 and vmac_links(lab, "a") == []
    # The client's neighbour entry stays valid: same MAC, now answered by unit b.
    assert lab.wait_for(lambda: client_sees_vip_at(lab) == VMAC, 5, what="VIP answers at vmac")
    lab.heal()  # restarts unit a: preferred, so it preempts
    lab.wait_for(lambda: lab.master() == "a" and held(lab, "a") == SHARED
                 and not held(lab, "b"), TAKEOVER, what="unit a fails back")
    reason = lab.unit_status("a")["reason"]
    assert reason.startswith("preempting"), reason
    assert vmac_links(lab, "b") == []
