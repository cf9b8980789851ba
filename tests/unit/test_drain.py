"""Draining real servers and the drain timeout (pure): which servers drain, when their time runs
out, the L4 rules that then reset their flows, and HAProxy's answers the cut reads."""

from __future__ import annotations

import pytest

from carpool.config.document import DocumentError, parse_document
from carpool.dataplane import haproxy, nft
from carpool.dataplane.drain import Drain, Drains, draining

IFACES = [
    {"name": "eth0", "first": "198.18.0.11", "second": "198.18.0.12", "shared": ["198.18.0.10/24"]},
]


def doc(weights=(1, 1), enabled=(True, True), **vs):
    servers = [
        {"address": f"198.18.2.10{n}", "port": 80, "weight": w, "enabled": e}
        for n, (w, e) in enumerate(zip(weights, enabled, strict=True), 1)
    ]
    return parse_document(
        {
            "interface": IFACES,
            "virtual_service": [
                {"name": "web", "address": "198.18.0.10", "port": 80, "real_server": servers, **vs}
            ],
        }
    )


def test_weight_0_and_disabled_servers_drain_with_their_services_timeout():
    d = doc(weights=(0, 1), enabled=(True, False), drain_timeout=30)
    assert draining(d) == {
        Drain("web", "web", "198.18.2.101", 80, 30),
        Drain("web", "web", "198.18.2.102", 80, 30),
    }
    assert draining(doc()) == set()


def test_pool_servers_drain_under_their_pools_key():
    d = parse_document(
        {
            "interface": IFACES,
            "virtual_service": [
                {
                    "name": "web",
                    "address": "198.18.0.10",
                    "port": 80,
                    "type": "http",
                    "drain_timeout": 5,
                    "real_server": [{"address": "198.18.2.101", "port": 80}],
                    "pool": [
                        {
                            "name": "api",
                            "real_server": [{"address": "198.18.2.103", "port": 81, "weight": 0}],
                        }
                    ],
                    "rule": [{"path_prefix": ["/api"], "pool": "api"}],
                }
            ],
        }
    )
    assert draining(d) == {Drain("web", "web:api", "198.18.2.103", 81, 5)}


def test_a_drain_runs_out_its_timeout_after_it_began_and_restarts_when_the_server_came_back():
    drains = Drains()
    drains.update(doc(drain_timeout=10), now=0)
    assert drains.deadline(0) is None and drains.expired(100) == frozenset()
    drains.update(doc(weights=(0, 1), drain_timeout=10), now=5)
    assert drains.deadline(5) == 15
    drains.update(doc(weights=(0, 2), drain_timeout=10), now=9)  # another edit: same clock
    assert drains.expired(14.9) == frozenset() and drains.deadline(14.9) == 15
    (gone,) = drains.expired(15)
    assert gone.address == "198.18.2.101" and drains.deadline(15) is None
    drains.update(doc(drain_timeout=10), now=20)  # back in the pool
    drains.update(doc(weights=(0, 1), drain_timeout=10), now=30)  # drains afresh
    assert drains.expired(35) == frozenset() and drains.deadline(35) == 40


def test_no_timeout_never_cuts():
    drains = Drains()
    drains.update(doc(weights=(0, 1)), now=0)
    assert drains.expired(10**9) == frozenset() and drains.deadline(0) is None


def forward(d, cut):
    cmds = nft.ruleset(d, cut=cut)["nftables"]
    chains = [c["add"]["chain"] for c in cmds if "chain" in c.get("add", {})]
    rules = [c["add"]["rule"] for c in cmds if "rule" in c.get("add", {})]
    return chains, [r["expr"] for r in rules if r["chain"] == "forward"]


def test_a_run_out_drain_resets_the_flows_of_that_server_only_while_cut():
    d = doc(weights=(0, 1), drain_timeout=3)
    chains, rules = forward(d, frozenset())
    assert rules == [] and not any(c["name"] == "forward" for c in chains)  # no hook idle
    chains, rules = forward(d, frozenset(draining(d)))
    assert [c["family"] for c in chains if c["name"] == "forward"] == ["ip"]
    (expr,) = rules
    matches = {
        (
            m["match"]["left"].get("ct", {}).get("key"),
            m["match"]["left"].get("ct", {}).get("dir"),
        ): m["match"]["right"]
        for m in expr
        if "match" in m
    }
    assert matches[("ip daddr", "original")] == "198.18.0.10"
    assert matches[("proto-dst", "original")] == 80
    assert matches[("ip saddr", "reply")] == "198.18.2.101"
    assert matches[("proto-src", "reply")] == 80
    assert expr[-1] == {"reject": {"type": "tcp reset"}}
    # the server's new connections were already gone: it is not in the pick
    pick = [
        c["add"]["rule"]["expr"]
        for c in nft.ruleset(d)["nftables"]
        if c.get("add", {}).get("rule", {}).get("chain") == "prerouting"
    ]
    assert "198.18.2.101" not in str(pick) and "198.18.2.102" in str(pick)


def test_a_udp_service_answers_port_unreachable_and_ipv6_uses_its_own_table():
    d = parse_document(
        {
            "interface": [
                {
                    "name": "eth0",
                    "first": "2001:2::11",
                    "second": "2001:2::12",
                    "shared": ["2001:2::10/64"],
                }
            ],
            "virtual_service": [
                {
                    "name": "dns",
                    "address": "2001:2::10",
                    "port": 53,
                    "protocol": "udp",
                    "drain_timeout": 1,
                    "real_server": [{"address": "2001:2:0:2::101", "port": 53, "enabled": False}],
                }
            ],
        }
    )
    chains, (expr,) = forward(d, frozenset(draining(d)))
    assert [c["family"] for c in chains if c["name"] == "forward"] == ["ip6"]
    assert expr[-1] == {"reject": {"type": "icmpv6", "expr": "port-unreachable"}}


@pytest.mark.parametrize("value", [-1, 86401, "soon"])
def test_drain_timeout_is_checked_and_named(value):
    with pytest.raises(DocumentError, match=r"virtual_service\[0\]\.drain_timeout"):
        doc(drain_timeout=value)


def test_the_canonical_form_of_a_document_without_drain_timeout_is_unchanged():
    assert b"drain_timeout" not in doc().canonical()
    assert b'"drain_timeout":5' in doc(drain_timeout=5).canonical()


SHOW_PROC = """#<PID>          <type>          <reloads>       <uptime>        <version>
9082            master          1 [failed: 0]   0d00h00m03s     2.6.12-1+deb12u4
# workers
9135            worker          0               0d00h00m01s     2.6.12-1+deb12u4
# old workers
9094            worker          1               0d00h00m03s     2.6.12-1+deb12u4
# programs
"""
SHOW_SESS = (
    "0x55a0: proto=tcpv4 src=198.18.1.50:39768 fe=fe_web be=be_web srv=s0 ts=00 age=2s\n"
    "0x55a1: proto=tcpv4 src=198.18.1.50:39770 fe=fe_web be=be_web srv=s1 ts=00 age=2s\n"
    "0x55a2: proto=tcpv4 src=198.18.1.50:39772 fe=fe_web be=be_web:api srv=s0 ts=00 age=1s\n"
    "0x55a3: proto=sockpair src=unix:2 fe=GLOBAL be=<NONE> srv=<none> ts=00 age=0s\n"
)


def test_the_masters_workers_and_a_servers_sessions_are_read_from_haproxys_answers():
    assert haproxy.workers(SHOW_PROC) == ["9135", "9094"]
    assert haproxy.sessions_of(SHOW_SESS, "be_web", {"s0"}) == ["0x55a0"]
    assert haproxy.sessions_of(SHOW_SESS, "be_web:api", {"s0"}) == ["0x55a2"]
    assert haproxy.sessions_of("", "be_web", {"s0"}) == []
