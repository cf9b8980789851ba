"""Unicast and broadcast adverts: with 224.0.0.18 and ff02::12 dropped on the switch, the
partner is still heard on every interface, in both families (networks where multicast is
blocked)."""

from __future__ import annotations

import json

import pytest


@pytest.mark.parametrize(
    "lab",
    [{"overrides": {"ha.transport": "unicast"}}, {"overrides": {"ha.transport": "broadcast"}}],
    indirect=True,
    ids=["unicast", "broadcast"],
)
def test_partner_heard_on_every_interface_with_multicast_blocked(lab):
    try:
        master = lab.wait_for_master()
        backup = "b" if master == "a" else "a"
        lab.block_multicast()
        before = lab.unit_status(backup)["partner"]

        def heard_everywhere_since_block():
            now = lab.unit_status(backup)["partner"]
            return all(
                now[i]["adverts_heard"] >= before[i]["adverts_heard"] + 3
                for i in ("eth0", "eth1", "eth2")
            )

        lab.wait_for(
            heard_everywhere_since_block,
            10,
            what=f"unit {backup} hears 3 more adverts on eth0, eth1 and eth2",
        )
        assert lab.states() == {master: "master", backup: "backup"}
        transport = lab.unit_status(backup)["transport"]
        assert transport in ("unicast", "broadcast")
        # The doctor probes the same way the adverts go: its path checks pass and say how.
        proc = lab.exec(backup, ["carpool", "doctor", "--json"], timeout=60)
        checks = json.loads(proc.stdout)["checks"]
        assert proc.returncode == 0, [c for c in checks if not c["ok"]]
        assert any(c["name"].startswith(f"{transport} eth0") for c in checks), checks
        # and in IPv6 (the partner's IPv6 address, or all-nodes ff02::1): every dual-stack
        # path is probed and passes
        for path in ("eth0/ipv6", "eth2/ipv6"):
            assert any(c["name"].startswith(f"{transport} {path}") for c in checks), checks
        assert any(c["name"] == "heartbeat eth1/ipv6" for c in checks), checks
    finally:
        lab.unblock()
