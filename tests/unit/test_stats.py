"""Traffic statistics (dataplane/stats.py) and their charts (web/charts.py): totals become rates
per second, a restart of the totals (a HAProxy reload) is no negative rate, the rings are
bounded, a service that went takes its history along; HAProxy's rows and the L4 counters map
to services and servers; the charts are SVG with every text escaped."""

from __future__ import annotations

from carpool.config.document import parse_document
from carpool.dataplane import nft
from carpool.dataplane import stats as S
from carpool.dataplane.l4 import new_connections, parse_flows
from carpool.web.charts import line_chart, timeline

DOC = parse_document(
    {
        "interface": [
            {
                "name": "eth0",
                "first": "198.18.0.11",
                "second": "198.18.0.12",
                "shared": ["198.18.0.10/24"],
            }
        ],
        "virtual_service": [
            {
                "name": "web",
                "address": "198.18.0.10",
                "port": 8080,
                "type": "http",
                "real_server": [{"address": "198.18.2.101", "port": 80}],
                "pool": [{"name": "api", "real_server": [{"address": "198.18.2.102", "port": 80}]}],
            },
            {
                "name": "tcp",
                "address": "198.18.0.10",
                "port": 80,
                "real_server": [{"address": "198.18.2.101", "port": 80}],
            },
        ],
    }
)
ROWS = [
    {
        "pxname": "fe_web",
        "svname": "FRONTEND",
        "stot": "10",
        "scur": "2",
        "bin": "1000",
        "bout": "5000",
        "req_tot": "40",
        "hrsp_2xx": "38",
        "hrsp_5xx": "2",
    },
    {"pxname": "be_web", "svname": "BACKEND", "rtime": "3"},
    {
        "pxname": "be_web",
        "svname": "rs1",
        "stot": "30",
        "scur": "1",
        "hrsp_2xx": "30",
        "rtime": "2",
    },
    {"pxname": "be_web:api", "svname": "rs1", "stot": "10", "hrsp_2xx": "8", "rtime": "4"},
]
HEALTH = [{"service": "web:api", "address": "198.18.2.102", "port": 80, "up": False, "flips": 3}]


def test_rows_counters_and_health_map_to_services_and_servers():
    got = S.samples(DOC, ROWS, {"tcp": {"connections": 7.0}}, HEALTH)
    assert got["web"]["requests"] == 40 and got["web"]["http_5xx"] == 2
    assert got["web"]["response_ms"] == 3 and got["web"]["bytes_out"] == 5000
    assert got["web/198.18.2.101:80"]["requests"] == 30 and got["web/198.18.2.101:80"]["up"] == 1
    api = got["web:api/198.18.2.102:80"]
    assert (api["up"], api["health_flips"], api["requests"]) == (0.0, 3.0, 10.0)
    assert got["tcp"] == {"connections": 7.0}


def test_totals_become_rates_and_a_restart_is_counted_from_zero():
    stats = S.Stats()
    stats.add(100.0, {"web": {"requests": 100.0, "current": 4.0}})
    assert stats.series("web") == []  # a rate needs two readings
    stats.add(105.0, {"web": {"requests": 150.0, "current": 6.0}})
    stats.add(110.0, {"web": {"requests": 20.0, "current": 1.0}})  # HAProxy reloaded
    assert stats.series("web") == [
        (105.0, {"requests": 10.0, "current": 6.0}),
        (110.0, {"requests": 4.0, "current": 1.0}),
    ]
    assert stats.latest("web") == {"requests": 4.0, "current": 1.0}


def test_the_rings_are_bounded_and_a_minute_is_averaged_into_the_day():
    stats = S.Stats()
    t, total = 0.0, 0.0
    for _ in range(800):  # more than an hour at 5 s
        total += 50.0  # 10 requests/s
        stats.add(t, {"web": {"requests": total}})
        t += 5.0
    assert len(stats.series("web", "1h")) == 720
    day = stats.series("web", "24h")
    assert len(day) == 66 and all(abs(p["requests"] - 10.0) < 1e-9 for _t, p in day)
    stats.add(t, {})  # the service went: so does its history
    assert stats.names() == []


def test_l4_new_connections_are_the_prerouting_counters_by_service():
    listing = """table ip carpool {
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		ip daddr 198.18.0.10 tcp dport 80 counter packets 12 bytes 720 dnat ip to numgen inc mod 2 map { 0 : 198.18.2.101 . 80 } comment "tcp"
		ip daddr 198.18.0.10 tcp dport 81 counter packets 3 bytes 180 dnat ip to 198.18.2.101 . 81 comment "other"
	}
	chain postrouting {
		ip daddr 198.18.2.101 counter packets 99 bytes 9 snat ip to 198.18.2.1 comment "tcp"
	}
}"""
    assert new_connections(listing) == [("tcp", 12), ("other", 3)]


def test_l4_servers_bytes_new_flows_and_open_flows_add_up_to_their_service():
    server = nft.traffic_counters(DOC)
    names = {field: name for name, (_svc, _key, field) in server.items()}
    assert set(names) == {"bytes_in", "bytes_out", "connections"}
    counters = {
        names["bytes_in"]: (9, 900),
        names["bytes_out"]: (7, 7000),
        names["connections"]: (3, 180),  # a flow's first packet: 3 flows
        ("ip", "t_gone_in"): (1, 1),  # a counter of no service of this document
    }
    flows = {
        ("tcp", "198.18.0.10", 80, "198.18.2.101", 80): 2,
        ("tcp", "198.18.0.10", 8080, "198.18.2.101", 80): 5,  # the http service's port
    }
    got = S.l4_traffic(DOC, [("tcp", 12), ("tcp", 1)], counters, flows)
    assert got["tcp/198.18.2.101:80"] == {
        "bytes_in": 900.0,
        "bytes_out": 7000.0,
        "connections": 3.0,
        "current": 2.0,
    }
    assert got["tcp"] == {
        "connections": 13.0,
        "bytes_in": 900.0,
        "bytes_out": 7000.0,
        "current": 2.0,
    }
    sampled = S.samples(DOC, [], got, [])
    assert sampled["tcp/198.18.2.101:80"]["bytes_out"] == 7000 and sampled["tcp"]["current"] == 2
    assert "current" not in S.l4_traffic(DOC, [], {}, None).get("tcp", {})  # table not read


def test_conntracks_listing_gives_the_open_flows_by_service_and_server():
    listing = (
        "tcp      6 431999 ESTABLISHED src=198.18.1.50 dst=198.18.0.10 sport=40000 dport=80 "
        "src=198.18.2.101 dst=198.18.1.50 sport=80 dport=40000 [ASSURED] mark=0 use=1\n"
        "tcp      6 119 TIME_WAIT src=198.18.1.50 dst=198.18.0.10 sport=40001 dport=80 "
        "src=198.18.2.101 dst=198.18.1.50 sport=80 dport=40001 [ASSURED] mark=0 use=1\n"
        "udp      17 29 src=198.18.1.50 dst=198.18.0.10 sport=5353 dport=53 [UNREPLIED] "
        "src=198.18.2.102 dst=198.18.1.50 sport=53 dport=5353 mark=0 use=1\n"
        "tcp      6 431999 ESTABLISHED src=2001:2::50 dst=2001:2::10 sport=40000 dport=80 "
        "src=2001:2:0:2::101 dst=2001:2::50 sport=80 dport=40000 [ASSURED] mark=0 use=1\n"
        "garbage line\n"
    )
    assert parse_flows(listing) == {
        ("tcp", "198.18.0.10", 80, "198.18.2.101", 80): 1,
        ("udp", "198.18.0.10", 53, "198.18.2.102", 53): 1,
        ("tcp", "2001:2::10", 80, "2001:2:0:2::101", 80): 1,
    }


def test_charts_are_svg_with_their_text_escaped():
    chart = line_chart([(0.0, 1.0), (5.0, 3.0)], 0.0, 10.0, "<b>req</b>/s")
    assert chart.startswith("<svg") and 'data-points="2"' in chart and "<polyline" in chart
    assert "<b>" not in chart and "&lt;b&gt;req" in chart and "3 now, peak 3" in chart
    assert "<polyline" not in line_chart([], 0.0, 10.0, "empty")
    bars = timeline(
        {"first": [{"time": 5.0, "old": "backup", "new": "master"}], "second<x>": []}, 0.0, 10.0
    )
    assert bars.count('data-state="master"') == 1 and "second&lt;x&gt;" in bars


def test_memory_is_bounded_by_counts_and_compact_rings():
    stats = S.Stats()
    many = {f"vs{n}": {"requests": 0.0} for n in range(S.MAX_SERVICES + 10)}
    many |= {f"vs0/198.18.2.{n % 250}:{n}": {"requests": 0.0} for n in range(S.MAX_SERVERS + 10)}
    stats.add(0.0, many)
    stats.add(5.0, many)
    names = stats.names()
    assert sum("/" not in k for k in names) == S.MAX_SERVICES
    assert sum("/" in k for k in names) == S.MAX_SERVERS
    server = next(k for k in names if "/" in k)
    assert list(stats.rings[server]) == ["1h"]  # a server keeps the hour only
    ring = stats.rings["vs0"]["24h"]
    assert ring.values["requests"].itemsize == 4 and len(ring.values["requests"]) == 1440


def test_the_l4_counters_live_in_their_own_tables_so_a_health_flip_keeps_them():
    main = str(nft.ruleset(DOC)["nftables"])
    assert "count" not in [
        c["add"]["chain"]["name"]
        for c in nft.ruleset(DOC)["nftables"]
        if "chain" in c.get("add", {})
    ]
    assert "t_" not in main  # no named counter in the tables a health flip reloads
    stats = nft.stats_ruleset(DOC)["nftables"]
    tables = {c["add"]["table"]["name"] for c in stats if "table" in c.get("add", {})}
    counters = [c["add"]["counter"]["name"] for c in stats if "counter" in c.get("add", {})]
    assert tables == {nft.STATS_TABLE} and sorted(counters) == sorted(
        name for _family, name in nft.traffic_counters(DOC)
    )
    down = nft.ruleset(DOC, healthy=lambda *k: False)["nftables"]
    assert down != nft.ruleset(DOC)["nftables"]  # the flip changes the main tables only
