"""IPv6 virtual services (pure, checked by nft and haproxy when installed): an L4 service
forwards within its family, in table ip6 carpool; HAProxy binds and reaches IPv6 addresses in
brackets and mixes families behind one http service."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from carpool.config.document import DocumentError, parse_document
from carpool.dataplane import nft
from carpool.dataplane.haproxy import LOCAL_ONLY, config_text

IFACES = [
    {
        "name": "eth0",
        "first": ["198.18.0.11", "2001:2::11"],
        "second": ["198.18.0.12", "2001:2::12"],
        "shared": ["198.18.0.10/24", "2001:2::10/64"],
    },
    {
        "name": "eth2",
        "first": ["198.18.2.11", "2001:2:0:2::11"],
        "second": ["198.18.2.12", "2001:2:0:2::12"],
        "shared": ["198.18.2.1/24", "2001:2:0:2::1/64"],
    },
]
RS6 = [{"address": "2001:2:0:2::101", "port": 80}, {"address": "2001:2:0:2::102", "port": 80}]
RS4 = [{"address": "198.18.2.101", "port": 80}]


def doc(*services):
    return parse_document({"interface": IFACES, "virtual_service": list(services)})


def l4(**over):
    return {"name": "web6", "address": "2001:2::10", "port": 80, "real_server": RS6} | over


def rules(d, family="ip6", chains=("prerouting", "postrouting")):
    return [
        c["add"]["rule"]
        for c in nft.ruleset(d)["nftables"]
        if "rule" in c.get("add", {})
        and c["add"]["rule"]["family"] == family
        and c["add"]["rule"]["chain"] in chains
    ]


def test_an_ipv6_l4_service_lives_in_table_ip6_carpool():
    d = doc(l4(), l4(name="web4", address="198.18.0.10", real_server=RS4))
    tables = [c["add"]["table"] for c in nft.ruleset(d)["nftables"] if "table" in c.get("add", {})]
    assert {(t["family"], t["name"]) for t in tables} == {("ip", "carpool"), ("ip6", "carpool")}
    [six] = rules(d)
    assert six["comment"] == "web6"
    assert six["expr"][0]["match"]["left"] == {"payload": {"protocol": "ip6", "field": "daddr"}}
    assert six["expr"][-1]["dnat"]["family"] == "ip6"
    assert [r["comment"] for r in rules(d, "ip")] == ["web4"]


def test_source_hash_persistence_and_reject_speak_ipv6():
    sh = rules(doc(l4(scheduler="sh")))[0]["expr"][-1]["dnat"]["addr"]["map"]["key"]["jhash"]
    assert sh["expr"] == {"payload": {"protocol": "ip6", "field": "saddr"}}
    d = doc(l4(persistence=60))
    sets = [c["add"]["set"] for c in nft.ruleset(d)["nftables"] if "set" in c.get("add", {})]
    assert {s["type"] for s in sets} == {"ipv6_addr"} and all(s["family"] == "ip6" for s in sets)
    carried = nft.carry_over(nft.ruleset(d), {sets[0]["name"]: [("2001:2::100", 30)]})
    [element] = [c["add"]["element"] for c in carried["nftables"] if "element" in c.get("add", {})]
    assert element["family"] == "ip6"
    udp = doc(l4(protocol="udp")).virtual_service[0]
    [rejected] = nft.service_rules(udp, lambda *k: False)  # every server down
    assert rejected[-1] == {"reject": {"type": "icmpv6", "expr": "port-unreachable"}}


def test_snat_takes_the_ipv6_shared_address_of_the_servers_subnet():
    [snat] = [
        c["add"]["rule"]["expr"][-1]
        for c in nft.ruleset(doc(l4(snat=True)))["nftables"]
        if "rule" in c.get("add", {}) and c["add"]["rule"]["chain"] == "postrouting"
    ][:1]
    assert snat == {"snat": {"family": "ip6", "addr": "2001:2:0:2::1"}}


@pytest.mark.parametrize(
    ("over", "key"),
    [
        ({"real_server": RS6 + RS4}, "virtual_service[0].real_server[2].address"),
        ({"when_down": "sorry", "sorry_server": "198.18.2.200"}, "virtual_service[0].sorry_server"),
        ({"address": "2001:2::99"}, "virtual_service[0].address"),  # not a shared address
        (
            {"real_server": [{"address": "ff02::1", "port": 80}]},
            "virtual_service[0].real_server[0].address",
        ),
    ],
)
def test_bad_ipv6_services_name_the_key(over, key):
    with pytest.raises(DocumentError) as e:
        doc(l4(**over))
    assert any(p.key == key for p in e.value.problems), str(e.value)


def test_an_http_service_may_mix_families():
    d = doc(l4(type="http", real_server=RS6 + RS4, persistence=30))
    text = config_text(d, Path("/run/carpool"), lambda *k: True, LOCAL_ONLY)
    assert "    bind [2001:2::10]:80" in text
    assert "server rs1 [2001:2:0:2::101]:80 weight 1" in text
    assert "server rs3 198.18.2.101:80 weight 1" in text
    assert "stick-table type ipv6 " in text


@pytest.mark.skipif(not shutil.which("haproxy"), reason="haproxy not installed")
def test_haproxy_accepts_the_ipv6_configuration(tmp_path):
    d = doc(
        l4(
            type="http",
            real_server=RS6 + RS4,
            persistence=30,
            when_down="sorry",
            sorry_server="2001:2:0:2::200",
        )
    )
    cfg = tmp_path / "h.cfg"
    cfg.write_text(config_text(d, tmp_path, lambda *k: True, LOCAL_ONLY))
    proc = subprocess.run(["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("nft") or not shutil.which("ip"),
    reason="nft check needs root",
)
def test_nft_accepts_the_ipv6_rulesets():
    """Every shape of IPv6 service, loaded for real into a namespace of its own."""
    ns = f"cp-t-nft6-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        for service in (
            l4(),
            l4(scheduler="sh", persistence=60),
            l4(protocol="udp", snat=True),
            l4(when_down="sorry", sorry_server="2001:2:0:2::200"),
        ):
            d = doc(service, l4(name="web4", address="198.18.0.10", real_server=RS4))
            for healthy in (lambda *k: True, lambda *k: False):
                batch = nft.carry_over(nft.ruleset(d, healthy), {})
                proc = subprocess.run(
                    ["ip", "netns", "exec", ns, "nft", "-j", "-f", "-"],
                    input=json.dumps(batch),
                    capture_output=True,
                    text=True,
                )
                assert proc.returncode == 0, (service, proc.stderr)
    finally:
        subprocess.run(["ip", "netns", "delete", ns], check=False)
