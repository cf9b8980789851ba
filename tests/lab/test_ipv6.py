"""A dual-stack pair in the lab (the lab's default): IPv6 shared addresses held with the IPv4
ones (nodad, deprecated), adverts in both families feeding one election, a takeover that the
client follows through an unsolicited Neighbor Advertisement, the fence over IPv6, and IPv6
virtual services (L4 in table ip6 carpool, http on HAProxy with servers of both families)
that spread over the real servers and keep serving after a failover."""

from __future__ import annotations

import json

from carpool.lab.topology import (
    CLIENT,
    SHARED_LAN,
    SHARED_LAN6,
    SHARED_SRV,
    SHARED_SRV6,
    UNIT_ADDR,
    mac_for,
    server_addr,
    server_addr6,
)

SERVERS = 3
CHECK = {"type": "http", "interval": 0.5, "timeout": 0.5, "rise": 2, "fall": 2}
SERVICES = [
    {
        "name": "web6-l4",
        "address": SHARED_LAN6.split("/")[0],
        "port": 80,
        "check": CHECK,
        "real_server": [{"address": server_addr6(i), "port": 80} for i in range(1, SERVERS + 1)],
    },
    {  # HAProxy joins the families: IPv6 clients, one IPv6 and two IPv4 servers
        "name": "web6-http",
        "address": SHARED_LAN6.split("/")[0],
        "port": 8080,
        "type": "http",
        "check": CHECK,
        "real_server": [{"address": server_addr6(1), "port": 80}]
        + [{"address": server_addr(i), "port": 80} for i in range(2, SERVERS + 1)],
    },
]
LAB_OPTIONS = {"servers": SERVERS, "overrides": {"virtual_service": SERVICES}}

SHARED6 = {SHARED_LAN6, SHARED_SRV6}
SHARED = {SHARED_LAN, SHARED_SRV} | SHARED6
VIP6 = SHARED_LAN6.split("/")[0]
TAKEOVER = 10.0  # s: master down (3 s) + detection, with room for a loaded machine
ROUNDS = 5  # advert rounds (one a second on each of 3 paths) past master down (3 s)


def other(unit: str) -> str:
    return "b" if unit == "a" else "a"


def addresses(lab, unit: str) -> dict[str, dict]:
    """cidr -> ip's addr_info of every address in the unit's namespace."""
    out = lab.exec(unit, ["ip", "-j", "addr", "show"], check=True).stdout
    return {
        f"{a['local']}/{a['prefixlen']}": a
        for link in json.loads(out)
        for a in link.get("addr_info", [])
    }


def held(lab, unit: str) -> set[str]:
    return set(addresses(lab, unit)) & SHARED


def client_neighbour(lab) -> str | None:
    """The link-layer address the client has for the shared IPv6 address."""
    out = lab.exec(CLIENT, ["ip", "-j", "-6", "neigh", "show", VIP6], check=True).stdout
    found = [n.get("lladdr") for n in json.loads(out) if n.get("dst") == VIP6]
    return found[0] if found else None


def fence_live6(lab, unit: str) -> set[str]:
    out = lab.exec(unit, ["nft", "-j", "list", "set", "ip6", "carpool_fence", "live"]).stdout
    return {
        str(e["elem"]["val"] if isinstance(e, dict) else e)
        for item in json.loads(out)["nftables"]
        for e in item.get("set", {}).get("elem", [])
    }


def test_the_master_holds_the_ipv6_shared_addresses_nodad_and_deprecated(healed_lab):
    lab = healed_lab
    master = lab.wait_for_master()
    lab.wait_for(
        lambda: held(lab, master) == SHARED and not held(lab, other(master)),
        TAKEOVER,
        what=f"{master} holds every shared address, both families",
    )
    mine = addresses(lab, master)
    for cidr in SHARED6:
        # nodad: the partner held it a moment ago; deprecated: never the unit's own source
        assert mine[cidr].get("nodad") and mine[cidr].get("deprecated"), mine[cidr]
        assert mine[cidr]["valid_life_time"] <= 3  # the kernel's backstop lifetime
    assert fence_live6(lab, master) == {c.split("/")[0] for c in SHARED6}
    assert lab.reaches(CLIENT, VIP6)
    assert client_neighbour(lab) == mac_for(UNIT_ADDR[master]["eth0"])


def _advert_drops(lab, unit: str) -> int:
    out = lab.exec(unit, ["nft", "-j", "list", "table", "inet", "carpool_lab"], check=True).stdout
    return sum(
        expr["counter"]["packets"]
        for item in json.loads(out)["nftables"]
        if "rule" in item
        for expr in item["rule"]["expr"]
        if "counter" in expr
    )


def test_adverts_in_either_family_alone_keep_the_pair_as_it_is(healed_lab):
    """One election across families: with one family's adverts dropped at the standby (in
    the table `lab heal` removes), the other family's keep every path alive past master
    down, and nothing moves."""
    lab = healed_lab
    master = lab.wait_for_master()
    standby = other(master)
    transitions = lab.unit_status(standby)["counters"]["transitions"]
    for family in ("ipv4", "ipv6"):
        lab.exec(
            standby,
            ["nft", "-f", "-"],
            input=(
                "table inet carpool_lab { chain input { type filter hook input priority -300; "
                f"meta nfproto {family} meta l4proto 112 counter drop ; }} ; }}\n"
            ),
            check=True,
        )
        try:
            lab.wait_for(
                lambda: _advert_drops(lab, standby) >= 3 * ROUNDS,
                3 * ROUNDS,
                what=f"{ROUNDS} rounds of {family} adverts dropped at {standby}",
            )
            status = lab.unit_status(standby)
            assert status["state"] == "backup", (family, status["reason"])
            assert status["counters"]["transitions"] == transitions
            assert all(p["advert_alive"] for p in status["partner"].values()), family
        finally:
            lab.exec(standby, ["nft", "delete", "table", "inet", "carpool_lab"])
    assert lab.master() == master


def test_a_killed_master_hands_its_ipv6_addresses_over_and_the_client_follows(healed_lab):
    """killall (nobody cleans up): the partner takes over, its unsolicited NA moves the
    client's neighbour entry to its MAC, the client reaches the address again, and the dead
    unit's fence has darkened its IPv6 addresses (the kernel removes them later)."""
    lab = healed_lab
    master = lab.wait_for_master()
    new = other(master)
    assert lab.reaches(CLIENT, VIP6)
    assert client_neighbour(lab) == mac_for(UNIT_ADDR[master]["eth0"])
    lab.killall(master)
    lab.wait_for(
        lambda: client_neighbour(lab) == mac_for(UNIT_ADDR[new]["eth0"]),
        TAKEOVER,
        what=f"the client's neighbour entry for {VIP6} names {new}'s MAC",
    )
    assert held(lab, new) >= SHARED6
    assert lab.reaches(CLIENT, VIP6)
    lab.wait_for(lambda: not fence_live6(lab, master), 3, what=f"{master}'s IPv6 fence dark")
    lab.wait_for(
        lambda: not held(lab, master) & SHARED6, 6, what="the kernel removes the addresses"
    )


def _served_by(lab, url: str, tries: int = 12) -> set[str]:
    """The real servers that answered `tries` GETs of url from the client (None: failed)."""
    return {(lab.http_get(CLIENT, url) or "").strip() or "(failed)" for _ in range(tries)}


def test_ipv6_virtual_services_spread_and_keep_serving_after_a_clean_stop(healed_lab):
    lab = healed_lab
    master = lab.wait_for_master()
    l4, http = f"http://[{VIP6}]/", f"http://[{VIP6}]:8080/"
    servers = {f"cp-r{i}" for i in range(1, SERVERS + 1)}
    for url in (l4, http):
        lab.wait_for(
            lambda url=url: _served_by(lab, url) == servers,
            15,
            what=f"{url} spread over {sorted(servers)}",
        )
    listing = lab.exec(master, ["nft", "list", "table", "ip6", "carpool"], check=True).stdout
    assert "web6-l4" in listing and "dnat ip6 to" in listing
    lab.term(master)  # a clean stop: it removes its addresses, the partner holds them all
    lab.wait_for(
        lambda: held(lab, other(master)) == SHARED and not held(lab, master),
        TAKEOVER,
        what=f"{other(master)} holds every shared address and {master} none",
    )
    for url in (l4, http):
        lab.wait_for(
            lambda url=url: _served_by(lab, url, 6) <= servers,
            TAKEOVER,
            what=f"{url} served after the failover",
        )


def test_a_shared_address_left_in_dad_is_added_again(healed_lab):
    """The active unit's 2001:2::10 replaced by a copy that runs duplicate address detection
    against a client claiming it too (it stays tentative, or fails): carpool's next renewal
    deletes it and adds it again, nodad, and says why."""
    lab = healed_lab
    master = lab.wait_for_master()
    dad = {"accept_dad": 1, "dad_transmits": 1}
    log_start = lab.log_path(master).stat().st_size
    lab.exec(CLIENT, ["ip", "addr", "add", f"{VIP6}/128", "dev", "eth0", "nodad"], check=True)
    try:
        lab.exec(
            master,
            ["sysctl", "-q", "-w", *(f"net.ipv6.conf.eth0.{k}={v}" for k, v in dad.items())],
            check=True,
        )
        lab.exec(
            master,
            ["ip", "-batch", "-"],
            input=f"addr del {SHARED_LAN6} dev eth0\naddr add {SHARED_LAN6} dev eth0\n",
            check=True,
        )

        def healed() -> bool:
            with open(lab.log_path(master), "rb") as f:
                f.seek(log_start)
                said = b"duplicate address detection" in f.read()
            info = addresses(lab, master).get(SHARED_LAN6, {})
            stuck = info.get("tentative") or info.get("dadfailed")
            return said and bool(info.get("nodad")) and not stuck

        lab.wait_for(healed, 5, what=f"{SHARED_LAN6} caught in DAD and added again")
    finally:
        lab.exec(CLIENT, ["ip", "addr", "del", f"{VIP6}/128", "dev", "eth0"])
        lab.exec(
            master,
            ["sysctl", "-q", "-w", *(f"net.ipv6.conf.eth0.{k}=0" for k in dad)],
        )


def test_a_planned_failover_finishes_ipv6_http_connections(healed_lab, tmp_path):
    """The handover in IPv6 (table ip6 carpool_handover, the address on lo as a /128): four
    keep-alive clients of web6-http lose no request over `carpool failover`."""
    import subprocess
    import time

    lab = healed_lab
    active = lab.wait_for_master()
    standby = other(active)
    stop = tmp_path / "stop"
    load = lab.spawn(
        CLIENT,
        [
            lab.python(),
            "-m",
            "carpool.lab.keepalive",
            f"http://[{VIP6}]:8080/",
            "--connections",
            "4",
            "--duration",
            "30",
            "--stop-file",
            str(stop),
            "--pause",
            "0.005",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.0)  # requests flow on the open connections
        answer = lab.exec(active, ["carpool", "failover", "--hold", "0"])
        assert answer.returncode == 0, answer.stderr
        lab.wait_for(
            lambda: lab.unit_status(standby)["handover"]["forwarding"], 5, what="a handover"
        )
        took_over = time.monotonic()
        time.sleep(2.0)
    finally:
        stop.touch()
        out, err = load.communicate(timeout=40)
    handover = lab.unit_status(standby)["handover"]
    assert handover["handed_back"]["packets"] > 0, handover
    for conn in json.loads(out or "{}").get("connections", [{}]):
        assert conn.get("failures") == 0 and conn["last_ok"] > took_over + 1.0, (conn, err)
