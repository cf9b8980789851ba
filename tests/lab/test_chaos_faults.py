"""The chaos campaign's fault primitives on one lab (fast profile, so heals are quick): each
injected, its effect seen from outside the daemons, then healed."""

from __future__ import annotations

import json
import random

from carpool.lab.ns import pids_in
from carpool.lab.topology import CLIENT, SHARED_LAN, UNIT_ADDR

LAB_OPTIONS = {"fast": True}
VIP = SHARED_LAN.split("/")[0]


def addr(unit: str, iface: str) -> str:
    return UNIT_ADDR[unit][iface].split("/")[0]


def proc_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def test_freeze_worker_and_whole_unit_thawed_by_heal(healed_lab):
    lab = healed_lab
    pid = lab.daemon_pid("b")
    assert lab.freeze("b") == [pid]
    lab.wait_for(lambda: proc_state(pid) == "T", 2, what="worker stopped")
    assert lab.unit_status("b", timeout=0.3)["state"] is None  # it answers nothing
    assert lab.frozen() == {"b": [pid]}
    lab.heal()
    assert proc_state(pid) != "T" and lab.frozen() == {}
    pids = lab.freeze("a", whole=True)
    assert set(pids) == set(pids_in(["cp-a"])["cp-a"]) and len(pids) >= 2
    # SIGSTOP takes effect when each process next runs: wait for it, as for the worker above
    lab.wait_for(lambda: all(proc_state(p) == "T" for p in pids), 2, what="unit a stopped")
    lab.heal()
    assert not any(proc_state(p) == "T" for p in pids)
    assert lab.unit_status("a")["state"] in ("master", "backup")


def test_killall_leaves_links_up_and_heal_restarts(healed_lab):
    lab = healed_lab
    master = lab.wait_for_master()
    killed = lab.killall(master)
    assert lab.supervisor_pid(master) is None and pids_in([f"cp-{master}"])[f"cp-{master}"] == []
    assert len(killed) >= 2
    assert lab.links_down() == {}
    assert lab.heal() in ("a", "b")
    assert lab.unit_running(master)


def test_flap_ends_up(healed_lab):
    windows = healed_lab.flap("a", "eth2", 3, random.Random(1))
    assert len(windows) == 3 and all(0.0 < up - down < 1.0 for down, up in windows)
    assert healed_lab.links_down() == {}


def test_one_way_drops_the_partners_adverts_at_one_unit_only(healed_lab):
    lab = healed_lab
    master = lab.wait_for_master()
    standby = "b" if master == "a" else "a"
    lab.one_way(standby)

    def dropped():
        out = lab.exec(
            standby, ["nft", "-j", "list", "table", "inet", "carpool_lab"], check=True
        ).stdout
        return sum(
            i["rule"]["expr"][-2]["counter"]["packets"]
            for i in json.loads(out)["nftables"]
            if "rule" in i
        )

    lab.wait_for(lambda: dropped() > 3, 3, what="the partner's adverts dropped")
    assert lab.reaches(standby, addr(master, "eth1"))  # ICMP passes
    lab.heal()
    assert lab.exec(standby, ["nft", "list", "table", "inet", "carpool_lab"]).returncode != 0


def test_partition_cuts_every_path_but_the_client_reaches_both(healed_lab):
    lab = healed_lab
    lab.partition()
    for iface in ("eth0", "eth1", "eth2"):
        assert not lab.ping("a", addr("b", iface), timeout=0.3)
    assert lab.reaches(CLIENT, addr("a", "eth0")) and lab.reaches(CLIENT, addr("b", "eth0"))
    assert lab.reaches("r1", addr("a", "eth2")) and lab.reaches("r1", addr("b", "eth2"))
    lab.heal()
    assert lab.reaches("a", addr("b", "eth0")) and lab.reaches("a", addr("b", "eth1"))


def test_reboot_restarts_the_unit_each_time(healed_lab):
    lab = healed_lab
    first = lab.supervisor_pid("b")
    windows = lab.reboot("b", times=2)
    assert len(windows) == 2 and lab.supervisor_pid("b") not in (None, first)
    assert lab.wait_for_master() in ("a", "b")
