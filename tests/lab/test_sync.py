"""Config sync between two real daemons on TCP 6973 (lab, default timers)."""

from __future__ import annotations

import json
import re
import threading

from carpool.lab.topology import CLIENT
from carpool.node import control

SHARED = "198.18.0.10"

SYNC = 10.0  # s: a change reaches the standby well within this (normally milliseconds)


def other(unit: str) -> str:
    return "b" if unit == "a" else "a"


def ask(lab, unit: str, command: str, **fields) -> dict:
    return control.request(str(lab.socket_path(unit)), command, timeout=10, **fields)


def shown(lab, unit: str) -> tuple[int, str]:
    proc = lab.exec(unit, ["carpool", "config", "show", "--json"], check=True)
    data = json.loads(proc.stdout)
    return data["version"], data["hash"]


def cli_set(lab, unit: str, key: str, value: str):
    return lab.exec(unit, ["carpool", "config", "set", key, value])


def wait_same(lab, timeout: float = SYNC) -> tuple[int, str]:
    def same():
        a, b = ask(lab, "a", "config.show"), ask(lab, "b", "config.show")
        return (
            (a["version"], a["hash"])
            if (a["version"], a["hash"]) == (b["version"], b["hash"])
            else None
        )

    return lab.wait_for(same, timeout, what="both units at the same version and hash")


def description(lab, unit: str) -> str:
    return ask(lab, unit, "config.show")["document"]["appliance"]["description"]


def test_change_on_active_reaches_standby(healed_lab):
    lab = healed_lab
    active = lab.wait_for_master()
    before = shown(lab, active)
    proc = cli_set(lab, active, "appliance.description", "edge pair, rack 4")
    assert proc.returncode == 0, proc.stderr
    assert "appliance.description" in proc.stdout
    version, hash_ = wait_same(lab)
    assert version == before[0] + 1
    assert shown(lab, other(active)) == (version, hash_)
    assert description(lab, other(active)) == "edge pair, rack 4"

    def in_sync():  # the active unit learns the partner's version from its answer, a bit later
        sync = lab.unit_status(active)["sync"]
        return (
            sync["state"] == "in sync" and sync["lag"] == 0 and sync["partner_version"] == version
        )

    lab.wait_for(in_sync, SYNC, what=f"unit {active} reports in sync at version {version}")


def test_standby_refuses_changes_naming_the_active_unit(healed_lab):
    lab = healed_lab
    active = lab.wait_for_master()
    standby = other(active)
    before = shown(lab, standby)
    proc = cli_set(lab, standby, "appliance.description", "should not land")
    assert proc.returncode != 0
    active_address = lab.unit_status(standby)["partner"]["eth0"]["address"]
    assert "standby" in proc.stderr and active_address in proc.stderr, proc.stderr
    assert shown(lab, standby) == before


def test_invalid_change_is_refused_and_nothing_applied(healed_lab):
    lab = healed_lab
    active = lab.wait_for_master()
    before = shown(lab, active)
    proc = cli_set(lab, active, "ha.vhid", "300")
    assert proc.returncode != 0 and "ha.vhid: must be <= 255" in proc.stderr, proc.stderr
    assert shown(lab, active) == before


def test_failover_then_change_on_new_active_syncs_back(healed_lab):
    lab = healed_lab
    first = lab.wait_for_master()
    lab.term(first)
    lab.wait_for(
        lambda: lab.unit_status(other(first))["state"] == "master",
        SYNC,
        what="the partner takes over",
    )
    assert (
        cli_set(lab, other(first), "appliance.description", "changed after failover").returncode
        == 0
    )
    lab.heal()  # the old active comes back as standby and is brought up to date
    wait_same(lab, 20)
    assert description(lab, first) == "changed after failover"


def test_blocked_sync_port_no_failover_then_converges(healed_lab):
    lab = healed_lab
    active = lab.wait_for_master()
    lab.block_sync()
    assert cli_set(lab, active, "appliance.description", "while 6973 blocked").returncode == 0
    lab.wait_for(
        lambda: lab.unit_status(active)["sync"]["state"].startswith("sync down"),
        45,
        what="active unit reports sync down",
    )
    assert lab.states() == {active: "master", other(active): "backup"}  # never a failover
    assert description(lab, other(active)) != "while 6973 blocked"
    lab.unblock()
    wait_same(lab, 20)
    assert description(lab, other(active)) == "while 6973 blocked"


def test_split_brain_changes_on_both_sides_keep_the_conflict(healed_lab):
    lab = healed_lab
    lab.wait_for_master()
    lab.block_multicast()  # a real partition: adverts and sync both cut
    lab.block_sync()
    lab.cut_heartbeat()
    lab.wait_for(
        lambda: set(lab.states().values()) == {"master"}, 15, what="split brain: both units master"
    )
    for unit in ("a", "b"):
        answer = ask(lab, unit, "config.set", key="appliance.description", value=f"by {unit}")
        assert "error" not in answer, answer
    lab.heal()
    lab.wait_for_master()
    wait_same(lab, 20)
    assert description(lab, "a") == "by a"  # preferred none: the first unit's side wins
    lost = [r for r in ask(lab, "b", "config.history")["history"] if r["conflict"]]
    assert lost and lost[-1]["origin"] == "second", lost
    lost_version = ask(
        lab,
        "b",
        "config.diff",
        a=lost[-1]["version"] - 1,
        b=f"{lost[-1]['version']}:{lost[-1]['hash'][:12]}",
    )
    assert any("by b" in line for line in lost_version["diff"]), lost_version
    proc = lab.exec("b", ["carpool", "config", "history"], check=True)
    assert "CONFLICT" in proc.stdout


def test_wrong_secret_is_refused_and_logged(healed_lab):
    lab = healed_lab
    lab.wait_for_master()
    lab.stop_unit("b")
    lab.write_configs(overrides={"b.unit.secret": "not-the-secret"})
    try:
        lab.start_unit("b")
        lab.wait_for(
            lambda: (
                lab.unit_status("a")["sync"]["counters"].get("unauthorized", 0)
                + lab.unit_status("b")["sync"]["counters"].get("unauthorized", 0)
                > 0
            ),
            20,
            what="an unauthorized sync connection is counted",
        )
        # either unit may count first; the line names a's connection to b (from 198.18.0.1)
        lab.wait_for(
            lambda: (
                "unauthorized connection from 198.18.0.1"
                in lab.log_tail("a", 200) + lab.log_tail("b", 200)
            ),
            20,
            what="b logs the unauthorized connection from 198.18.0.1",
        )
    finally:
        lab.stop_unit("b")
        lab.write_configs(overrides=None)
        lab.start_unit("b")
    lab.heal()


def test_sigkill_of_standby_during_200_changes_ends_identical(healed_lab):
    lab = healed_lab
    active = lab.wait_for_master()
    standby = other(active)
    errors = []
    done = [0]

    def burst():
        for n in range(200):
            answer = ask(lab, active, "config.set", key="appliance.description", value=f"burst {n}")
            if "error" in answer:
                errors.append(answer)
            done[0] = n + 1

    writer = threading.Thread(target=burst)
    writer.start()
    # the kill lands during the burst: after some changes, not after a fixed time
    lab.wait_for(lambda: done[0] >= 20 or not writer.is_alive(), 30, what="the burst under way")
    lab.kill(standby)
    writer.join(timeout=120)
    assert not writer.is_alive() and not errors, errors[:3]
    lab.heal()
    version, _ = wait_same(lab, 30)
    assert description(lab, standby) == "burst 199"
    assert lab.unit_status(standby)["config"]["version"] == version


FUZZ = r"""
import socket, struct, sys
host = sys.argv[1]
cases = [b"", b"\x00\x00", struct.pack("!I", 0xFFFFFFF0) + b"x", struct.pack("!I", 5) + b"{]",
         struct.pack("!I", 2) + b"{}", b"GET / HTTP/1.0\r\n\r\n",
         struct.pack("!I", 40) + b'{"type":"hello","proto":1,"nonce":"short"}'[:40],
         struct.pack("!I", 100) + b"truncated"]
for data in cases:
    s = socket.create_connection((host, 6973), timeout=3)
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    try:
        while s.recv(4096):
            pass
    except OSError:
        pass
    s.close()
print("sent", len(cases))
"""


def test_fuzzed_frames_on_6973_never_crash(healed_lab):
    lab = healed_lab
    active = lab.wait_for_master()
    pid = lab.daemon_pid(active)
    address = lab.unit_status(other(active))["partner"]["eth0"]["address"]
    # from the partner's own address (a buggy or hijacked partner): judged and counted
    proc = lab.exec(other(active), [lab.python(), "-c", FUZZ, address], check=True)
    assert "sent 8" in proc.stdout

    def bad_frames() -> int:
        counters = lab.unit_status(active)["sync"]["counters"]
        return sum(v for k, v in counters.items() if k.startswith("bad_frame"))

    lab.wait_for(lambda: bad_frames() >= 3, 5, what="at least 3 bad frames counted")
    assert lab.daemon_pid(active) == pid and lab.unit_status(active)["state"] == "master"
    before = shown(lab, active)
    assert cli_set(lab, active, "appliance.description", "after fuzz").returncode == 0
    assert wait_same(lab)[0] == before[0] + 1


def test_6973_answers_the_partner_only(healed_lab):
    """A client-LAN host reaches neither the sync port (the guard drops its SYN), nor a
    listener on a shared address (6973 binds the unit's own addresses only)."""
    lab = healed_lab
    active = lab.wait_for_master()
    own = lab.unit_status(active)["partner"]["eth0"]["address"]  # the standby's, seen from us
    probe = (
        "import socket, sys\n"
        "for host in sys.argv[1:]:\n"
        "    try:\n"
        "        socket.create_connection((host, 6973), timeout=1).close(); print(host, 'open')\n"
        "    except OSError as e:\n"
        "        print(host, type(e).__name__)\n"
    )
    out = lab.exec(CLIENT, [lab.python(), "-c", probe, own, SHARED], check=True).stdout
    assert f"{own} TimeoutError" in out, out  # dropped by the guard, not refused
    assert f"{SHARED} TimeoutError" in out, out  # the active unit's guard: the same
    # the partner passes the guard, and finds no listener on the shared address
    out = lab.exec(other(active), [lab.python(), "-c", probe, SHARED], check=True).stdout
    assert f"{SHARED} ConnectionRefusedError" in out, out
    status = lab.unit_status(other(active))
    assert status["guard"] == {"installed": True, "last_error": ""}, status["guard"]
    ruleset = lab.exec(other(active), ["nft", "list", "table", "ip", "carpool_guard"]).stdout
    [rule] = [line for line in ruleset.splitlines() if "sync: not the partner" in line]
    dropped = re.search(r"packets (\d+)", rule)
    assert dropped and int(dropped[1]) > 0, ruleset


def test_force_partner_update_from_the_cli(healed_lab):
    lab = healed_lab
    active = lab.wait_for_master()
    assert cli_set(lab, active, "appliance.description", "forced").returncode == 0
    proc = lab.exec(active, ["carpool", "config", "sync", "--force"])
    assert proc.returncode == 0 and "partner updated" in proc.stdout, proc.stderr
    assert wait_same(lab) == shown(lab, active)
    refused = lab.exec(other(active), ["carpool", "config", "sync", "--force"])
    assert refused.returncode != 0 and "standby" in refused.stderr


def test_ha_change_is_applied_live_on_both_units(healed_lab):
    lab = healed_lab
    active = lab.wait_for_master()
    pid = {u: lab.daemon_pid(u) for u in ("a", "b")}
    assert cli_set(lab, active, "ha.advskew", "20").returncode == 0
    lab.wait_for(
        lambda: all(lab.unit_status(u)["advskew"] == 20 for u in ("a", "b")),
        SYNC,
        what="both units run with advskew 20",
    )
    # applied in place: same daemons, same master, adverts still accepted (the HMAC-covered
    # header changed on both sides)
    assert {u: lab.daemon_pid(u) for u in ("a", "b")} == pid
    before = lab.unit_status(other(active))["partner"]["eth0"]["adverts_heard"]
    lab.wait_for(
        lambda: lab.unit_status(other(active))["partner"]["eth0"]["adverts_heard"] >= before + 3,
        10,
        what="the standby keeps hearing the active unit",
    )
    assert lab.states() == {active: "master", other(active): "backup"}
    assert cli_set(lab, active, "ha.advskew", "0").returncode == 0
