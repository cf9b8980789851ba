"""The handover after a planned failover (dataplane/handover.py): which listeners relay where,
and the nftables commands of both sides, checked by nft's own parser when it can run."""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from carpool.config.ha import parse_config
from carpool.dataplane import handover
from carpool.lab.units import base_config
from carpool.node.fence import install_commands

A = ipaddress.ip_address


def lab_cfg(unit: str = "a"):
    doc = base_config(unit, Path("/tmp/cp-unit"), False, False, "none", 3)
    doc["virtual_service"] = [
        {"name": "web", "address": "198.18.0.10", "port": 8080, "type": "http"},
        {"name": "l4", "address": "198.18.0.10", "port": 80},  # nftables: not handed back
        {"name": "web6", "address": "2001:2::10", "port": 8080, "type": "http"},
    ]
    return parse_config(doc)


def test_http_listeners_on_shared_addresses_are_numbered_alike_on_both_units():
    a, b = handover.pairs(lab_cfg("a")), handover.pairs(lab_cfg("b"))
    assert [(p.address, p.port, p.relay) for p in a] == [
        (A("198.18.0.10"), 8080, handover.RELAY_BASE),
        (A("2001:2::10"), 8080, handover.RELAY_BASE + 1),
    ]
    assert [(p.address, p.port, p.relay) for p in a] == [(p.address, p.port, p.relay) for p in b]
    # each unit relays to the other's address on the link that holds the service's address
    assert (a[0].own, a[0].partner) == (A("198.18.0.11"), A("198.18.0.12"))
    assert (b[0].own, b[0].partner) == (A("198.18.0.12"), A("198.18.0.11"))
    assert (a[1].own, a[1].partner) == (A("2001:2::11"), A("2001:2::12"))


def test_forward_commands_keep_the_units_own_connections_and_relay_the_rest():
    text = handover.forward_commands(handover.pairs(lab_cfg("a")), 0x01000000, 10)
    assert "elements = { 198.18.0.10 . 8080 timeout 10000ms }" in text
    assert "198.18.0.10 . 8080 : 61000" in text and "61000 : 198.18.0.12" in text
    assert "ct state new tcp flags & (syn | ack) == syn ct mark set ct mark | 0x1000000" in text
    assert "ct mark & 0x1000000 == 0x1000000 accept" in text
    assert "priority mangle" in text and "61001 : 2001:2::12" in text
    assert text.count("delete table") == 2


def test_finish_commands_restore_the_service_before_connection_tracking():
    text = handover.finish_commands(handover.pairs(lab_cfg("b")), 2.5)
    assert "elements = { 198.18.0.12 . 61000 timeout 2500ms }" in text
    assert "61000 : 198.18.0.10" in text and "61000 : 8080" in text
    assert "priority raw" in text and "ip6 daddr set tcp dport map @address" in text


def test_no_listener_no_rules():
    cfg = lab_cfg("a")
    assert "chain" not in handover.forward_commands([], 1, 10)
    assert handover.remove_commands().count("delete table") == 2
    doc = cfg.document.model_copy(update={"virtual_service": ()})
    assert handover.pairs(cfg.__class__(**{**cfg.__dict__, "document": doc})) == []


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("nft") is None, reason="nft --check needs root and nft"
)
def test_nft_accepts_both_sides_and_the_fence():
    from ipaddress import IPv4Address, IPv6Address

    found = handover.pairs(lab_cfg("a"))
    fence = install_commands([IPv4Address("198.18.0.10"), IPv6Address("2001:2::10")])
    for text in (
        handover.forward_commands(found, handover.MARK["first"], 10),
        handover.finish_commands(found, 10),
        handover.remove_commands(),
        fence,
    ):
        check = subprocess.run(["nft", "-c", "-f", "-"], input=text, capture_output=True, text=True)
        assert check.returncode == 0, (check.stderr, text)


SHOW_PROC = """#<PID>          <type>          <reloads>       <uptime>        <version>
24863           master          1 [failed: 0]   0d00h00m01s     2.6.12-1+deb12u4
# workers
24911           worker          0               0d00h00m00s     2.6.12-1+deb12u4
# old workers
24866           worker          1               0d00h00m01s     2.6.12-1+deb12u4
# programs
"""


def test_old_workers_are_counted_from_the_master_cli():
    from carpool.dataplane.haproxy import old_workers, workers

    assert workers(SHOW_PROC) == ["24911", "24866"]
    assert old_workers(SHOW_PROC) == 1
    done = SHOW_PROC.replace("# old workers\n24866           worker          1    ", "")
    assert old_workers(done.split("# old workers")[0] + "# programs\n") == 0
