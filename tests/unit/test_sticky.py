"""HAProxy persistence tables carried over a reload (pure): config parsing and the commands."""

from __future__ import annotations

from carpool.dataplane import sticky

OLD = """global
    localpeer first

backend be_shop
    balance roundrobin
    stick-table type ip size 256k expire 300s peers carpool
    stick on src
    server rs1 198.18.2.101:80 weight 1
    server rs2 198.18.2.102:80 weight 1 disabled
    server rs3 198.18.2.103:80 weight 1

backend be_plain
    balance roundrobin
    server rs1 198.18.2.101:80 weight 1
"""
# rs1 removed: HAProxy's ids shift (102 is now 1, 103 is 2), and a server was added
NEW = """backend be_shop
    balance roundrobin
    stick-table type ip size 256k expire 60s peers carpool
    stick on src
    server rs1 198.18.2.102:80 weight 1
    server rs2 198.18.2.103:80 weight 1
    server rs3 198.18.2.104:80 weight 1
"""
SHOW = """# table: be_shop, type: ip, size:262144, used:3
0x55c07681fe30: key=198.18.0.100 use=0 exp=299000 server_id=1 server_key=rs1
0x55c07681fe31: key=198.18.0.101 use=0 exp=12000 server_id=3 server_key=rs3
0x55c07681fe32: key=198.18.0.102 use=1 exp=5000 server_id=2 server_key=-

"""


def test_only_backends_with_a_stick_table_count_and_ids_follow_the_order():
    assert sticky.servers_by_id(OLD) == {
        "be_shop": {1: ("198.18.2.101", 80), 2: ("198.18.2.102", 80), 3: ("198.18.2.103", 80)}
    }


def test_show_table_entries():
    assert sticky.entries(SHOW) == [("198.18.0.100", 1), ("198.18.0.101", 3), ("198.18.0.102", 2)]
    assert sticky.entries("# table: be_shop, type: ip, size:262144, used:0\n") == []


def test_clients_go_back_to_the_server_with_the_same_address():
    saved = {"be_shop": sticky.entries(SHOW), "be_gone": [("198.18.0.9", 1)]}
    assert sticky.restore_commands(saved, OLD, NEW) == [
        # 198.18.0.100 was on 101, which is gone: scheduled anew
        "set table be_shop key 198.18.0.101 data.server_id 2",  # 103: id 3 -> 2
        "set table be_shop key 198.18.0.102 data.server_id 1",  # 102: id 2 -> 1
    ]
    assert sticky.restore_commands(saved, OLD, OLD.replace("stick", "#")) == []


def test_ipv6_servers_and_pool_backends_are_told_apart():
    """An IPv6 server is written [address]:port: each is its own server (the address's first
    group is no port), and a pool's backend (be_SERVICE:POOL) keeps its table too."""
    config = """backend be_site:api
    balance roundrobin
    stick-table type ipv6 size 256k expire 60s peers carpool
    stick on src
    server rs1 [2001:2:0:2::101]:80 weight 1
    server rs2 [2001:2:0:2::102]:8080 weight 1 disabled
"""
    assert sticky.servers_by_id(config) == {
        "be_site:api": {1: ("2001:2:0:2::101", 80), 2: ("2001:2:0:2::102", 8080)}
    }
