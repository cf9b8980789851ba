"""The L4 ruleset generator (pure): schedulers, weights, health, all-down, SNAT."""

from __future__ import annotations

import json

import pytest

from carpool.config.document import DocumentError, parse_document
from carpool.dataplane import nft

IFACES = [
    {"name": "eth0", "first": "198.18.0.11", "second": "198.18.0.12", "shared": ["198.18.0.10/24"]},
    {"name": "eth2", "first": "198.18.2.11", "second": "198.18.2.12", "shared": ["198.18.2.1/24"]},
]
RS = [
    {"address": "198.18.2.101", "port": 80, "weight": 2},
    {"address": "198.18.2.102", "port": 8080},
]


def doc(**vs):
    return parse_document(
        {
            "interface": IFACES,
            "virtual_service": [
                {"name": "web", "address": "198.18.0.10", "port": 80, "real_server": RS, **vs}
            ],
        }
    )


def rule(d, healthy=lambda *k: True, chain="prerouting"):
    cmds = nft.ruleset(d, healthy)["nftables"]
    return [
        c["add"]["rule"]["expr"]
        for c in cmds
        if "rule" in c.get("add", {}) and c["add"]["rule"]["chain"] == chain
    ]


def target(expr):
    return expr[-1]


def test_table_is_replaced_whole_in_one_transaction():
    cmds = nft.ruleset(doc())["nftables"]
    assert [list(c)[0] for c in cmds[:3]] == ["add", "delete", "add"]
    assert all("table" in c[list(c)[0]] for c in cmds[:3])
    json.dumps(cmds)  # plain JSON


def test_round_robin_maps_every_enabled_server_once():
    [expr] = rule(doc())
    m = target(expr)["dnat"]["addr"]["map"]
    assert m["key"] == {"numgen": {"mode": "inc", "mod": 2}}
    assert m["data"]["set"] == [
        [0, {"concat": ["198.18.2.101", 80]}],
        [1, {"concat": ["198.18.2.102", 8080]}],
    ]


def test_weighted_round_robin_repeats_by_weight():
    [expr] = rule(doc(scheduler="wrr"))
    slots = [e[1]["concat"][0] for e in target(expr)["dnat"]["addr"]["map"]["data"]["set"]]
    assert slots == ["198.18.2.101", "198.18.2.101", "198.18.2.102"]


def test_source_hash_picks_by_client_address_with_a_fixed_seed():
    [expr] = rule(doc(scheduler="sh"))
    key = target(expr)["dnat"]["addr"]["map"]["key"]
    seed = key["jhash"].pop("seed")
    assert key == {"jhash": {"expr": {"payload": {"protocol": "ip", "field": "saddr"}}, "mod": 2}}
    # fixed per service: the same on both units and at every load (the kernel's is random)
    assert isinstance(seed, int) and 0 <= seed < 2**32
    assert seed == nft.hash_seed(doc().virtual_service[0])


def sets(d, healthy=lambda *k: True):
    return {
        c["add"]["set"]["name"]: c["add"]["set"]
        for c in nft.ruleset(d, healthy)["nftables"]
        if "set" in c.get("add", {})
    }


SADDR = {"payload": {"protocol": "ip", "field": "saddr"}}


@pytest.mark.parametrize("scheduler", ["rr", "wrr", "sh"])
def test_persistence_sends_a_known_client_back_to_its_server(scheduler):
    d = doc(persistence=300, scheduler=scheduler)
    vs = d.virtual_service[0]
    first, second = (
        nft.persist_set(vs, "198.18.2.101", 80),
        nft.persist_set(vs, "198.18.2.102", 8080),
    )
    assert set(sets(d)) == {first, second} and first != second
    assert sets(d)[first]["timeout"] == 300 and sets(d)[first]["flags"] == ["timeout"]
    stick_1, stick_2, pick, new_1, new_2 = rule(d)
    # a known client: back to its server, its time refreshed
    assert stick_1[2:] == [
        {"match": {"op": "==", "left": SADDR, "right": "@" + first}},
        {"set": {"op": "update", "elem": SADDR, "set": "@" + first}},
        {"counter": None},
        {"dnat": {"family": "ip", "addr": "198.18.2.101", "port": 80}},
    ]
    assert stick_2[-1] == {"dnat": {"family": "ip", "addr": "198.18.2.102", "port": 8080}}
    # a new one: scheduled as without persistence (slot -> server number in the mark) ...
    chosen = pick[-1]["mangle"]["value"]["map"]
    assert list(chosen["key"]) == (["jhash"] if scheduler == "sh" else ["numgen"])
    slots = [1, 1, 2] if scheduler == "wrr" else [1, 2]
    assert chosen["data"]["set"] == [[n, i] for n, i in enumerate(slots)]
    # ... then remembered with its server
    assert new_1[2] == {"match": {"op": "==", "left": {"meta": {"key": "mark"}}, "right": 1}}
    assert new_1[3] == {"set": {"op": "add", "elem": SADDR, "set": "@" + first}}
    assert new_2[-1] == stick_2[-1]


def test_persistence_forgets_the_clients_of_a_down_server():
    d = doc(persistence=60)
    up = lambda vs, a, p: a != "198.18.2.102"  # noqa: E731
    assert list(sets(d, up)) == [nft.persist_set(d.virtual_service[0], "198.18.2.101", 80)]
    assert len(rule(d, up)) == 3


def test_persistent_clients_are_carried_over_a_ruleset_load():
    d = doc(persistence=60)
    vs = d.virtual_service[0]
    kept, gone = nft.persist_set(vs, "198.18.2.101", 80), "persist_deadbeef"
    listing = {
        "nftables": [
            {"metainfo": {"version": "1.0.6"}},
            {
                "set": {
                    "name": kept,
                    "timeout": 300,
                    "elem": [
                        {"elem": {"val": "198.18.0.100", "expires": 200}},
                        {"elem": {"val": "198.18.0.101", "expires": 0}},
                    ],
                }
            },
            {
                "set": {
                    "name": gone,
                    "timeout": 60,
                    "elem": [{"elem": {"val": "198.18.0.102", "expires": 5}}],
                }
            },
            {"set": {"name": "someone_elses", "elem": ["1.2.3.4"]}},
        ]
    }
    members = nft.persisted(listing)
    assert members == {
        kept: [("198.18.0.100", 200), ("198.18.0.101", 0)],
        gone: [("198.18.0.102", 5)],
    }
    batch = nft.carry_over(nft.ruleset(d), members)["nftables"]
    added = [c["add"]["element"] for c in batch if "element" in c.get("add", {})]
    # the new timeout (60) caps what was left; a server no longer in the pool keeps nobody
    assert added == [
        {
            "family": "ip",
            "table": "carpool",
            "name": kept,
            "elem": [
                {"elem": {"val": "198.18.0.100", "timeout": 60, "expires": 60}},
                {"elem": {"val": "198.18.0.101", "timeout": 60, "expires": 1}},
            ],
        }
    ]
    assert batch[: len(nft.ruleset(d)["nftables"])] == nft.ruleset(d)["nftables"]


def test_down_disabled_and_drained_servers_leave_the_pool():
    d = doc(
        real_server=[
            RS[0],
            {**RS[1], "enabled": False},
            {"address": "198.18.2.103", "port": 80, "weight": 0},
            {"address": "198.18.2.104", "port": 80},
        ]
    )
    [expr] = rule(d, healthy=lambda vs, a, p: a != "198.18.2.104")
    assert target(expr)["dnat"]["addr"]["map"]["data"]["set"] == [
        [0, {"concat": ["198.18.2.101", 80]}]
    ]


def test_all_down_rejects_or_goes_to_the_sorry_server():
    down = lambda *k: False  # noqa: E731
    assert target(rule(doc(), down)[0]) == {"reject": {"type": "tcp reset"}}
    sorry = rule(doc(when_down="sorry", sorry_server="198.18.2.200"), down)[0]
    assert target(sorry) == {"dnat": {"family": "ip", "addr": "198.18.2.200", "port": 80}}


def test_snat_uses_the_shared_address_in_the_servers_subnet():
    rules = rule(doc(snat=True), chain="postrouting")
    assert [r[-1] for r in rules] == [{"snat": {"family": "ip", "addr": "198.18.2.1"}}] * 2
    assert rule(doc(), chain="postrouting") == []


def test_http_services_are_not_in_the_l4_table():
    assert rule(doc(type="http")) == []


@pytest.mark.parametrize(
    "vs, message",
    [
        ({"address": "198.18.0.99"}, "is not a shared address"),
        ({"scheduler": "fastest"}, "scheduler: must be one of"),
        ({"real_server": [{"address": "198.18.2.101", "port": 80, "weight": 999}]}, "<= 256"),
        ({"scheduler": "lc"}, "needs type http"),
    ],
)
def test_invalid_services_are_refused_with_the_key(vs, message):
    with pytest.raises(DocumentError, match=message):
        doc(**vs)
