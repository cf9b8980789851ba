"""The partner ports' guard (node/guard.py): 6973 from the partner's address on each link,
6974 and 3780 only on the links meant for them, loopback for the unit's own tools — checked by
`nft -c` (no ruleset is changed) where nft runs."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from carpool.config.ha import parse_config
from carpool.node.guard import install_commands, links

CFG = parse_config(
    {
        "unit": {"role": "first", "secret": "unit-test-secret"},
        "interface": [
            {
                "name": "eth0",
                "first": "198.18.0.11",
                "second": "198.18.0.12",
                "shared": ["198.18.0.10/24"],
            },
            {"name": "eth1", "first": "198.18.1.1", "second": "198.18.1.2", "heartbeat": True},
            {
                "name": "eth2",
                "first": "198.18.2.11",
                "second": "198.18.2.12",
                "check": False,
                "shared": ["198.18.2.1/24"],
            },
        ],
    }
)


def test_each_port_only_from_the_partner_on_its_links():
    by_kind = {k: [i.name for i in v] for k, v in links(CFG).items()}
    assert by_kind == {
        "sync": ["eth0", "eth1", "eth2"],
        "peers": ["eth1"],  # HAProxy's peers on the heartbeat link
        "conntrack": ["eth1", "eth0"],  # conntrackd's links: heartbeat first, checked others
        "liveness": ["eth0", "eth1"],  # the fast detector's: the checked links
    }
    text = install_commands(CFG, 7000)
    assert '"eth0" . 198.18.0.12' in text and "198.18.0.11" not in text  # the partner's only
    assert "tcp dport 7000 iifname . ip saddr != @sync counter drop" in text
    assert "udp dport 3780 iifname . ip saddr != @conntrack counter drop" in text
    assert "udp dport 6975 iifname . ip saddr != @liveness counter drop" in text
    assert 'iifname "lo" accept' in text


def test_the_ipv6_table_guards_the_partners_ipv6_addresses():
    cfg = parse_config(
        {
            "unit": {"role": "first", "secret": "unit-test-secret"},
            "interface": [
                {
                    "name": "eth0",
                    "first": ["198.18.0.11", "2001:2::11"],
                    "second": ["198.18.0.12", "2001:2::12"],
                },
                {
                    "name": "eth1",
                    "first": "2001:2:0:1::1",
                    "second": "2001:2:0:1::2",
                    "heartbeat": True,
                },
            ],
        }
    )
    text = install_commands(cfg, 6973)
    ip, ip6 = text.split("table ip6 ", 1)
    assert '"eth0" . 198.18.0.12' in ip and "2001:2" not in ip
    assert '"eth0" . 2001:2::12' in ip6 and '"eth1" . 2001:2:0:1::2' in ip6
    assert "iifname . ip6 saddr != @sync counter drop" in ip6
    if os.geteuid() == 0 and shutil.which("nft"):
        proc = subprocess.run(
            ["nft", "-c", "-f", "-"], input=text, text=True, capture_output=True, timeout=10
        )
        assert proc.returncode == 0, proc.stderr


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("nft") is None, reason="needs nft as root (check mode)"
)
def test_nft_accepts_the_table():
    proc = subprocess.run(
        ["nft", "-c", "-f", "-"],
        input=install_commands(CFG, 6973),
        text=True,
        capture_output=True,
        timeout=10,
    )
    assert proc.returncode == 0, proc.stderr
