"""The fence's raw nf_tables refresh (node/nfset.py), in a network namespace of its own: the
elements it writes are what `nft` then lists, with their timeout, and an error is an OSError."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from carpool.node import netlink, nfset

SNIPPET = """
import json, subprocess, sys
from ipaddress import ip_address as A
from carpool.node.fence import install_commands
from carpool.node import nfset
shared = [A("198.18.0.10"), A("2001:2::10"), A("198.18.2.1")]
subprocess.run(["nft", "-f", "-"], input=install_commands(shared), text=True, check=True)
refresher = nfset.SetRefresher()
live = {f: nfset.keys(shared[:2], f) for f in ("ip", "ip6", "arp")}
refresher.refresh("carpool_fence", "live", live, 4000)
refresher.refresh("carpool_fence", "live", live, 4000)  # again: the same batch, no error
def listed(family):
    out = subprocess.run(["nft", "-j", "list", "set", family, "carpool_fence", "live"],
                         capture_output=True, text=True, check=True).stdout
    found = {}
    for item in json.loads(out)["nftables"]:
        for e in item.get("set", {}).get("elem", []):
            found[e["elem"]["val"]] = e["elem"].get("timeout")
    return found
held = {f: listed(f) for f in ("ip", "ip6", "arp")}
refresher.refresh("carpool_fence", "live", {f: [] for f in live}, 4000)
emptied = {f: listed(f) for f in ("ip", "ip6", "arp")}
try:
    refresher.refresh("no_such_table", "live", live, 4000)
    error = None
except OSError as e:
    error = e.errno
print(json.dumps({"held": held, "emptied": emptied, "error": error}))
"""


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("nft"),
    reason="needs root, unshare and nft",
)
def test_the_raw_refresh_writes_what_nft_lists():
    src = os.path.join(os.path.dirname(nfset.__file__), "..", "..")
    proc = subprocess.run(
        ["unshare", "-n", sys.executable, "-c", SNIPPET],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONPATH": os.path.abspath(src)},
    )
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert res["held"] == {
        "ip": {"198.18.0.10": 4},
        "ip6": {"2001:2::10": 4},
        "arp": {"198.18.0.10": 4},
    }
    assert res["emptied"] == {"ip": {}, "ip6": {}, "arp": {}}
    assert res["error"] == 2  # ENOENT: no such table


def test_one_transaction_flushes_then_adds_per_family():
    data = nfset.batch("t", "live", {"ip": [b"\xc6\x12\x00\x0a"], "ip6": []}, 80, 1)
    kinds, offset = [], 0
    while offset < len(data):
        length, kind, flags, seq, _pid = netlink.NLMSGHDR.unpack_from(data, offset)
        kinds.append((kind & 0xFF, seq, bool(flags & nfset.NLM_F_ACK)))
        offset += length
    assert kinds == [
        (nfset.NFNL_MSG_BATCH_BEGIN, 1, False),
        (nfset.NFT_MSG_DELSETELEM, 2, True),  # flush ip
        (nfset.NFT_MSG_NEWSETELEM, 3, True),  # add ip
        (nfset.NFT_MSG_DELSETELEM, 4, True),  # flush ip6 (nothing to add)
        (nfset.NFNL_MSG_BATCH_END, 5, False),
    ]
    assert b"\x00\x00\x00\x00\x00\x00\x00\x50" in data  # the timeout, 80 ms, big-endian
