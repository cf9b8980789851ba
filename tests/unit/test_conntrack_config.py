"""The conntrackd configuration carpool writes (pure), checked by conntrackd's own parser when
it is installed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from carpool.config.ha import parse_config
from carpool.dataplane.conntrack import config_text, wanted
from carpool.lab.units import base_config


def lab_cfg(unit: str = "a", **ha):
    doc = base_config(unit, Path("/tmp/cp-unit"), False, False, "none", 3)
    doc["ha"] = {**doc.get("ha", {}), **ha}
    return parse_config(doc)


def test_links_heartbeat_first_and_own_addresses_ignored():
    links, ignore = wanted(lab_cfg("a"))
    assert links[0] == ("eth1", "198.18.1.1", "198.18.1.2")  # the heartbeat is the default
    assert {link[0] for link in links} == {"eth0", "eth1", "eth2"}
    assert "198.18.0.11" in ignore and "198.18.0.12" in ignore
    assert "198.18.0.10" not in ignore and "198.18.2.1" not in ignore  # DNAT flows are synced
    # the lab is dual-stack: the units' IPv6 addresses stay local too, IPv6 DNAT flows sync
    assert "2001:2::11" in ignore and "2001:2::12" in ignore and "2001:2::10" not in ignore
    text = config_text(links, ignore, Path("/run/x"))
    assert "IPv6_address 2001:2::11" in text and "IPv6_address ::1" in text
    assert wanted(lab_cfg("a", state_sync=False)) is None


def test_config_text_has_one_default_link_and_no_external_cache(tmp_path):
    text = config_text(*wanted(lab_cfg("b")), run_dir=tmp_path)
    assert text.count("UDP Default {") == 1 and text.count("UDP {") == 2
    assert "DisableExternalCache on" in text
    assert f"Path {tmp_path / 'conntrackd.ctl'}" in text


@pytest.mark.skipif(shutil.which("conntrackd") is None, reason="conntrackd not installed")
def test_conntrackd_parses_it(tmp_path):
    """`conntrackd -C F -s` parses F before it finds no daemon to ask: a syntax error says so."""
    path = tmp_path / "conntrackd.conf"
    path.write_text(config_text(*wanted(lab_cfg("a")), run_dir=tmp_path))
    proc = subprocess.run(
        ["conntrackd", "-C", str(path), "-s"], capture_output=True, text=True, timeout=10
    )
    assert "parsing" not in (proc.stderr + proc.stdout).lower(), proc.stderr
    bad = tmp_path / "bad.conf"
    bad.write_text("Sync { Mode FTFW { NoSuchKey on } }\n")
    proc = subprocess.run(
        ["conntrackd", "-C", str(bad), "-s"], capture_output=True, text=True, timeout=10
    )
    assert "parsing config file" in proc.stderr + proc.stdout  # the check above can fail
