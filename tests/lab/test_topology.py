"""The lab itself (DESIGN §5), without the election: names, addresses, reachability, real
servers, every fault blocks what it should and heal() undoes it, down() leaves nothing.

Absence is checked with bounded waits (a ping with a 1 s deadline, a receiver that gives up after
1 s); presence is checked with deadlines and returns as soon as it is seen: a probe (echo, request,
multicast burst, gratuitous ARP) is repeated until it gets through, never judged on one packet.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys

import pytest

from carpool.lab import Lab, LabError, LabTimeout
from carpool.lab import core as lab_core
from carpool.lab.ns import alive, ip, namespaces, pids_in
from carpool.lab.topology import HOST_IF, lab_namespaces, link_local_for, mac_for
from carpool.lab.units import SECRET, apply_overrides, base_config, to_toml

pytestmark = pytest.mark.lab
LAB_OPTIONS = dict(start_units=False, servers=2)

A_LAN, B_LAN, A_SRV, B_SRV = "198.18.0.11", "198.18.0.12", "198.18.2.11", "198.18.2.12"
A_HB, B_HB = "198.18.1.1", "198.18.1.2"
VMAC = "00:00:5e:00:01:01"

# Waits for one proto-112 packet to 224.0.0.18 carrying MARKER on the interface with address
# ADDR: prints "ready" once joined, then "got" or "none" (after SECONDS).
RECV_112 = """
import select, socket, sys, time
addr, marker, seconds = sys.argv[1], sys.argv[2].encode(), float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 112)
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
             socket.inet_aton("224.0.0.18") + socket.inet_aton(addr))
print("ready", flush=True)
end = time.monotonic() + seconds
while (left := end - time.monotonic()) > 0:
    if select.select([s], [], [], left)[0] and marker in s.recv(4096):
        print("got", flush=True)
        sys.exit(0)
print("none", flush=True)
"""
SEND_112 = """
import socket, sys, time
addr, marker = sys.argv[1], sys.argv[2].encode()
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 112)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(addr))
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
for _ in range(10):
    s.sendto(marker, ("224.0.0.18", 0))
    time.sleep(0.02)
"""
# Gratuitous ARP for ADDRESS from SRC_MAC, out of IFNAME.
SEND_GARP = """
import socket, struct, sys
ifname, address, mac = sys.argv[1], sys.argv[2], bytes.fromhex(sys.argv[3].replace(":", ""))
ip = socket.inet_aton(address)
frame = (b"\\xff" * 6 + mac + struct.pack("!H", 0x0806) + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1)
         + mac + ip + b"\\xff" * 6 + ip)
with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806)) as s:
    s.bind((ifname, 0x0806))
    s.send(frame)
"""


# -- helpers ----------------------------------------------------------------------------------
def multicast_arrives(lab: Lab, src: str, dst: str, marker: str, seconds: float = 1.0) -> bool:
    """Does a proto-112 packet to 224.0.0.18 sent by cp-a from `src` reach cp-b on `dst`?"""
    recv = lab.spawn(
        "b",
        [sys.executable, "-I", "-c", RECV_112, dst, marker, str(seconds)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert recv.stdout.readline().strip() == "ready", recv.stderr.read()
        lab.exec("a", [sys.executable, "-I", "-c", SEND_112, src, marker], check=True)
        out, err = recv.communicate(timeout=seconds + 10)
    finally:
        if recv.poll() is None:
            recv.kill()
            recv.wait()
    assert out.strip() in ("got", "none"), err
    return out.strip() == "got"


def garp(lab: Lab, node: str, ifname: str, address: str, mac: str) -> None:
    lab.exec(node, [sys.executable, "-I", "-c", SEND_GARP, ifname, address, mac], check=True)


def announce(
    lab: Lab, node: str, ifname: str, address: str, mac: str, observer: str, timeout: float = 5.0
) -> str | None:
    """Gratuitous ARP for `address` from node, sent again each round (one frame may be lost)
    until `observer` has a neighbour entry for it: that entry's MAC, or None at the deadline."""

    def learned():
        garp(lab, node, ifname, address, mac)
        return lab.neighbour_mac(observer, address)

    try:
        return lab.wait_for(learned, timeout, interval=0.1, what=f"{observer} learns {address}")
    except LabTimeout:
        return None


def get(lab: Lab, node: str, url: str, timeout: float = 10.0) -> str | None:
    """The body of GET url from node, asked again until one answers (None at the deadline)."""
    try:
        return lab.wait_for(lambda: lab.http_get(node, url), timeout, what=f"{node} GETs {url}")
    except LabTimeout:
        return None


def addresses(lab: Lab, node: str) -> dict[str, list[str]]:
    out = lab.exec(node, ["ip", "-j", "addr", "show"], check=True).stdout
    return {
        link["ifname"]: [f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", [])]
        for link in json.loads(out)
    }


def sysctl(lab: Lab, node: str, key: str) -> str:
    return lab.exec(node, ["sysctl", "-n", key], check=True).stdout.strip()


# -- the topology -----------------------------------------------------------------------------
def test_namespaces_and_addresses(lab):
    assert set(lab_namespaces()) == {"cp-a", "cp-b", "cp-sw", "cp-c1", "cp-r1", "cp-r2"}
    lo = ["127.0.0.1/8", "::1/128"]

    def both(cidr: str, cidr6: str) -> list[str]:  # IPv4, IPv6, the link-local from the MAC
        return [cidr, cidr6, f"{link_local_for(cidr)}/64"]

    expected = {
        "a": {
            "lo": lo,
            "eth0": both(f"{A_LAN}/24", "2001:2::11/64"),
            "eth1": both(f"{A_HB}/30", "2001:2:0:1::1/64"),
            "eth2": both(f"{A_SRV}/24", "2001:2:0:2::11/64"),
        },
        "b": {
            "lo": lo,
            "eth0": both(f"{B_LAN}/24", "2001:2::12/64"),
            "eth1": both(f"{B_HB}/30", "2001:2:0:1::2/64"),
            "eth2": both(f"{B_SRV}/24", "2001:2:0:2::12/64"),
        },
        "c1": {"lo": lo, "eth0": both("198.18.0.100/24", "2001:2::100/64")},
        "r1": {"lo": lo, "eth0": both("198.18.2.101/24", "2001:2:0:2::101/64")},
        "r2": {"lo": lo, "eth0": both("198.18.2.102/24", "2001:2:0:2::102/64")},
    }
    for node, want in expected.items():  # dual-stack: nothing else (no SLAAC, no DAD left)
        assert addresses(lab, node) == want, node
    sw = addresses(lab, "sw")
    assert set(sw) == {
        "lo",
        "lan",
        "srv",
        "a-eth0",
        "a-eth2",
        "b-eth0",
        "b-eth2",
        "c1",
        "r1",
        "r2",
        "host",
    }
    assert all(v == [] for k, v in sw.items() if k != "lo")
    # every lab-made link is up, loopback included
    for node in ("a", "b", "sw", "c1", "r1", "r2"):
        out = json.loads(lab.exec(node, ["ip", "-j", "link", "show"], check=True).stdout)
        assert all("UP" in link["flags"] for link in out), node
    # bridges and their ports
    by_bridge = {
        bridge: {
            port["ifname"]
            for port in json.loads(
                lab.exec("sw", ["ip", "-j", "link", "show", "master", bridge], check=True).stdout
            )
        }
        for bridge in ("lan", "srv")
    }
    assert by_bridge == {
        "lan": {"a-eth0", "b-eth0", "c1", "host"},
        "srv": {"a-eth2", "b-eth2", "r1", "r2"},
    }
    # the host end, and its only addresses (no link-local) in the lab ranges
    host = json.loads(ip("-j", "addr", "show", "dev", HOST_IF).stdout)[0]
    assert [f"{a['local']}/{a['prefixlen']}" for a in host["addr_info"]] == [
        "198.18.0.254/24",
        "2001:2::fe/64",
    ]
    # the lab's ranges only (RFC 2544 / RFC 5180), beside each link's own link-local
    ranges = [ipaddress.ip_network("198.18.0.0/15"), ipaddress.ip_network("2001:2::/48")]
    for node in ("a", "b", "c1", "r1", "r2"):
        for link, cidrs in addresses(lab, node).items():
            for cidr in cidrs:
                address = ipaddress.ip_interface(cidr).ip
                assert (
                    link == "lo"
                    or address.is_link_local
                    or any(address in r for r in ranges if r.version == address.version)
                ), (node, link, cidr)
    # readable MACs
    assert (
        json.loads(lab.exec("a", ["ip", "-j", "link", "show", "eth0"]).stdout)[0]["address"]
        == mac_for(A_LAN)
        == "02:00:c6:12:00:0b"
    )


def test_sysctls_and_routes(lab):
    bridge_nf = lab.exec("sw", ["sysctl", "-n", "net.bridge.bridge-nf-call-iptables"])
    # absent without br_netfilter: then bridged frames never meet the IP hooks either
    assert bridge_nf.stdout.strip() == "0" or "cannot stat" in bridge_nf.stderr
    for node in ("c1", "r1", "r2"):
        assert sysctl(lab, node, "net.ipv4.conf.eth0.arp_accept") == "1", node
    assert "default via 198.18.0.10 dev eth0" in lab.exec("c1", ["ip", "route"]).stdout
    for node in ("r1", "r2"):
        assert "default via 198.18.2.1 dev eth0" in lab.exec(node, ["ip", "route"]).stdout


def test_client_and_host_reach_both_units_on_lan(lab):
    for address in (A_LAN, B_LAN):
        assert lab.reaches("c1", address), address
        assert lab.reaches("host", address), address


def test_units_reach_each_other_over_heartbeat_cable(lab):
    assert lab.reaches("a", B_HB)
    assert lab.reaches("b", A_HB)


def test_real_servers_answer_http(lab):
    assert lab.server_pids().keys() == {"cp-r1", "cp-r2"} and all(lab.server_pids().values())
    for unit in ("a", "b"):
        assert get(lab, unit, "http://198.18.2.101/") == "cp-r1\n"
        assert get(lab, unit, "http://198.18.2.102/") == "cp-r2\n"
    assert get(lab, "a", "http://198.18.2.101/bytes/1000") == "x" * 1000


def test_gratuitous_arp_creates_neighbour_entries(lab):
    """arp_accept=1 on the client and servers (DESIGN §7): a GARP makes the entry."""
    ip("neigh", "flush", "dev", "eth0", ns="cp-c1")
    ip("neigh", "flush", "dev", "eth0", ns="cp-r1")
    assert lab.neighbour_mac("c1", "198.18.0.10") is None
    assert announce(lab, "a", "eth0", "198.18.0.10", mac_for(A_LAN), "c1") == mac_for(A_LAN)
    assert announce(lab, "a", "eth2", "198.18.2.1", mac_for(A_SRV), "r1") == mac_for(A_SRV)


def test_exec_sets_the_unit_config(lab):
    for unit in ("a", "b"):
        out = lab.exec(
            unit, ["sh", "-c", "echo $CARPOOL_CONFIG; command -v carpool"], check=True
        ).stdout.split()
        assert out[0] == str(lab.config_path(unit))
        assert out[1].endswith("/bin/carpool")


# -- unit configuration -----------------------------------------------------------------------
def test_unit_configs_load_with_the_project_loader(lab):
    from carpool.config.ha import load_config

    lab.write_configs(
        fast=True,
        vmac=True,
        preferred="first",
        overrides={
            "ha.fast_interval_ms": 50,
            "interface": {"eth0": {"ping_target": "198.18.0.100"}},
            "b": {"unit.log_level": "debug"},
        },
    )
    try:
        a, b = load_config(lab.config_path("a")), load_config(lab.config_path("b"))
        assert (a.role, b.role) == ("first", "second")
        assert a.secret == b.secret == SECRET.encode() and a.vhid == 1
        assert (
            a.fast
            and (a.protocol, a.auth) == ("carp", "carpool")
            and a.fast_interval_ms == 50
            and a.vmac
        )
        assert a.preferred == "first" and a.preempt and not b.preempt
        assert a.state_dir == str(lab.state_dir("a")) and b.state_dir == str(lab.state_dir("b"))
        assert (a.log_level, b.log_level) == ("info", "debug")
        eth0, eth1, eth2 = a.interfaces
        assert (
            eth0.name,
            [str(s) for s in eth0.shared],
            str(eth0.first),
            str(eth0.second),
            str(eth0.ping_target),
        ) == ("eth0", ["198.18.0.10/24", "2001:2::10/64"], A_LAN, B_LAN, "198.18.0.100")
        assert (eth1.name, eth1.heartbeat, str(eth1.first), str(eth1.second)) == (
            "eth1",
            True,
            A_HB,
            B_HB,
        )
        assert (eth2.name, [str(s) for s in eth2.shared], str(eth2.first), str(eth2.second)) == (
            "eth2",
            ["198.18.2.1/24", "2001:2:0:2::1/64"],
            A_SRV,
            B_SRV,
        )
        with pytest.raises(LabError, match="state_dir"):
            lab.write_configs(overrides={"unit.state_dir": "/tmp/elsewhere"})
        assert load_config(lab.config_path("a")).fast_interval_ms == 50  # nothing written
    finally:
        lab.write_configs(fast=False, vmac=False, preferred="none", overrides=None)


def test_overrides_remove_and_replace():
    doc = base_config("a", "/tmp/x")
    out = apply_overrides(
        doc,
        {
            "interface.eth2": None,
            "ha": {"vmac": None, "ha_timeout": 6},
            "interface.eth3.first": "198.18.3.1",
            "a.unit.notify": "/x",
        },
        "a",
    )
    assert [i["name"] for i in out["interface"]] == ["eth0", "eth1", "eth3"]
    assert out["interface"][2] == {"name": "eth3", "first": "198.18.3.1"}
    assert "vmac" not in out["ha"] and out["ha"]["ha_timeout"] == 6
    assert out["unit"]["notify"] == "/x"
    assert apply_overrides(doc, {"a.unit.notify": "/x"}, "b")["unit"].get("notify") is None
    assert doc == base_config("a", "/tmp/x")  # not changed in place
    import tomllib

    assert tomllib.loads(to_toml(out)) == out


# -- faults -----------------------------------------------------------------------------------
def test_block_icmp_drops_ping_but_not_tcp(healed_lab):
    lab = healed_lab
    lab.serve_http("a", 8080)
    try:
        assert lab.reaches("c1", A_LAN)
        lab.block_icmp()
        assert lab.switch_faults() == ["block-icmp"]
        assert not lab.ping("c1", A_LAN)
        assert not lab.ping("a", "198.18.2.101")  # srv bridge too
        assert get(lab, "c1", f"http://{A_LAN}:8080/") == "cp-a\n"
        assert lab.reaches("a", B_HB)  # not on the cable
        lab.heal()
        assert lab.switch_faults() == []
        assert lab.reaches("c1", A_LAN)
    finally:
        lab.stop_http("a", 8080)


def test_block_multicast_drops_adverts_on_both_bridges(healed_lab):
    lab = healed_lab

    def gets_through(src: str, dst: str, marker: str) -> bool:  # presence: tried until seen
        return lab.wait_for(
            lambda: multicast_arrives(lab, src, dst, marker),
            10,
            what=f"multicast {marker} from {src} reaches {dst}",
        )

    assert gets_through(A_LAN, B_LAN, "lan-1")
    assert gets_through(A_SRV, B_SRV, "srv-1")
    lab.block_multicast()
    assert not multicast_arrives(lab, A_LAN, B_LAN, "lan-2")
    assert not multicast_arrives(lab, A_SRV, B_SRV, "srv-2")
    assert gets_through(A_HB, B_HB, "hb-2")  # the cable is no switch
    assert lab.reaches("a", B_LAN)  # unicast still passes
    lab.heal()
    assert gets_through(A_LAN, B_LAN, "lan-3")


def test_block_sync_drops_tcp_6973_only(healed_lab):
    lab = healed_lab
    lab.serve_http("b", 6973)
    lab.serve_http("b", 6974)

    def connects(port: int) -> bool:  # presence: tried until accepted
        return lab.wait_for(
            lambda: lab.tcp_connect("a", B_LAN, port), 10, what=f"a connects to {B_LAN}:{port}"
        )

    try:
        assert connects(6973)
        lab.block_sync()
        assert not lab.tcp_connect("a", B_LAN, 6973, timeout=1.0)
        assert not lab.tcp_connect("a", B_SRV, 6973, timeout=1.0)
        assert connects(6974)
        assert lab.reaches("a", B_LAN)
        lab.heal()
        assert connects(6973)
    finally:
        lab.stop_http("b", 6973)
        lab.stop_http("b", 6974)


def test_block_vmac_drops_frames_from_the_virtual_mac(healed_lab):
    lab = healed_lab
    ip("neigh", "flush", "dev", "eth0", ns="cp-c1")
    lab.block_vmac()
    garp(lab, "a", "eth0", "198.18.0.10", VMAC)  # dropped by the switch
    # then a marker that passes (sent until it is seen)
    assert announce(lab, "a", "eth0", "198.18.0.20", mac_for(A_LAN), "c1") == mac_for(A_LAN)
    assert lab.neighbour_mac("c1", "198.18.0.10") is None
    lab.heal()
    assert announce(lab, "a", "eth0", "198.18.0.10", VMAC, "c1") == VMAC


def test_link_down_and_up(healed_lab):
    lab = healed_lab
    lab.link_down("a", "eth0")
    assert lab.links_down() == {"cp-a": ["eth0"]}
    assert not lab.ping("c1", A_LAN)
    assert lab.reaches("c1", B_LAN)
    lab.link_up("cp-a", "eth0")
    assert lab.links_down() == {}
    assert lab.reaches("c1", A_LAN)


def test_cut_heartbeat_and_heal(healed_lab):
    lab = healed_lab
    lab.cut_heartbeat()
    assert lab.links_down() == {"cp-a": ["eth1"], "cp-b": ["eth1"]}
    assert not lab.ping("a", B_HB)
    assert lab.reaches("a", B_LAN)
    lab.heal()
    assert lab.reaches("a", B_HB)


def test_crash_takes_every_link_of_the_unit_down(healed_lab):
    lab = healed_lab
    lab.crash("b")
    assert set(lab.links_down()["cp-b"]) == {"eth0", "eth1", "eth2"}
    assert not lab.ping("c1", B_LAN)
    lab.heal()
    assert lab.links_down() == {}
    assert lab.reaches("c1", B_LAN) and lab.reaches("a", B_HB)


# -- unit processes (needs only `carpool run` to write daemon.pid and answer status) -----------
def test_unit_process_faults(healed_lab):
    lab = healed_lab
    lab.start_unit("a")
    try:
        sup, worker = lab.supervisor_pid("a"), lab.daemon_pid("a")
        assert sup and worker and sup != worker
        assert lab.unit_status("a")["state"] in ("init", "backup", "master")
        out = lab.exec("a", ["carpool", "status", "--json"], check=True).stdout
        assert json.loads(out)["state"] in ("init", "backup", "master")
        assert lab.unit_status("b")["state"] is None and lab.unit_status("b")["error"]

        # kill: the worker only; its supervisor outlives it (to clean up), heal restarts
        assert lab.kill("a") == worker
        lab.wait_for(lambda: not alive(worker), 5)
        assert not lab.unit_running("a")
        lab.heal()
        assert lab.unit_running("a") and lab.daemon_pid("a") != worker
        assert lab.unit_status("a")["state"] is not None

        # crash: links first, then both processes; what the daemon left stays until power-on
        sup, worker = lab.supervisor_pid("a"), lab.daemon_pid("a")
        ip("addr", "add", "198.18.0.77/24", "dev", "eth0", ns="cp-a")  # stands in for leftovers
        ip("link", "add", "left0", "link", "eth0", "type", "macvlan", "mode", "bridge", ns="cp-a")
        assert sorted(lab.crash("a")) == sorted([sup, worker])
        assert not alive(sup) and not alive(worker)
        assert set(lab.links_down()["cp-a"]) >= {"eth0", "eth1", "eth2"}
        assert "198.18.0.77/24" in addresses(lab, "a")["eth0"]
        lab.heal()
        assert lab.unit_running("a") and lab.links_down() == {}
        ipv4 = [a for a in addresses(lab, "a")["eth0"] if ":" not in a]
        assert ipv4 == [f"{A_LAN}/24"] and "left0" not in addresses(lab, "a")

        # term: a clean stop of supervisor and worker
        sup, worker = lab.supervisor_pid("a"), lab.daemon_pid("a")
        assert lab.term("a") == sup
        lab.wait_for(lambda: not alive(sup) and not alive(worker), 10)
        with pytest.raises(LabError):
            lab.kill("a")
    finally:
        lab.stop_unit("a")
    assert lab.supervisor_pid("a") is None and lab.daemon_pid("a") is None
    assert "a" not in lab.wanted


# -- tear-down --------------------------------------------------------------------------------
def _ours() -> list[str]:
    # cp-t-* belong to other test modules (made and removed by them)
    return [n for n in namespaces() if n.startswith("cp-") and not n.startswith("cp-t-")]


def test_down_removes_everything(lab):
    pids = [p for ps in pids_in(lab_namespaces()).values() for p in ps]
    assert pids  # the real servers at least
    removed = lab.down()
    assert set(removed) >= {"cp-host", "cp-a", "cp-b", "cp-sw", "cp-c1", "cp-r1", "cp-r2"}
    assert _ours() == []
    assert ip("link", "show", "dev", HOST_IF, check=False).returncode != 0
    assert not any(alive(p) for p in pids)
    assert not (lab.dir / "lab.json").exists()
    assert lab.down() == []  # twice is fine


def test_down_cleans_a_half_built_lab(lab_lock):
    """What a crashed `lab up` may leave: some namespaces, the host veth, a process."""
    ip("netns", "add", "cp-a")
    ip("netns", "add", "cp-sw")
    ip("link", "add", HOST_IF, "type", "veth", "peer", "name", "host", "netns", "cp-sw")
    sleeper = subprocess.Popen(["ip", "netns", "exec", "cp-a", "sleep", "300"])
    try:
        Lab().wait_for(lambda: pids_in(["cp-a"])["cp-a"], 5)
        removed = Lab().down()
        assert set(removed) == {"cp-a", "cp-sw", HOST_IF}
        assert sleeper.wait(timeout=5) is not None
        assert _ours() == []
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
        Lab().down()


def test_failed_up_tears_down_what_it_built(lab_lock, monkeypatch):
    def broken(self, node, *args, **kwargs):
        raise LabError(f"injected failure starting a server in {node}")

    monkeypatch.setattr(lab_core.Lab, "serve_http", broken)
    with pytest.raises(LabError, match="injected failure"):
        Lab().up(start_units=False)
    assert _ours() == []
    assert ip("link", "show", "dev", HOST_IF, check=False).returncode != 0


def test_up_replaces_an_existing_lab(lab_lock):
    first = Lab().up(start_units=False, servers=3)
    try:
        old = first.server_pids()["cp-r3"]
        second = Lab().up(start_units=False, servers=1)
        assert set(lab_namespaces()) == {"cp-a", "cp-b", "cp-sw", "cp-c1", "cp-r1"}
        assert not alive(old)
        assert get(second, "a", "http://198.18.2.101/") == "cp-r1\n"
    finally:
        Lab().down()
    assert _ours() == []


def test_cli_round_trip(lab_lock):
    carpool = [sys.executable, "-m", "carpool.cli"]
    try:
        up = subprocess.run(
            [*carpool, "lab", "up", "--no-units", "--servers", "1", "--force"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert up.returncode == 0, up.stderr
        status = json.loads(
            subprocess.run(
                [*carpool, "lab", "status", "--json"], capture_output=True, text=True, timeout=30
            ).stdout
        )
        assert status["namespaces"] == ["cp-a", "cp-b", "cp-c1", "cp-r1", "cp-sw"]
        ex = subprocess.run(
            [*carpool, "lab", "exec", "cp-a", "--", "ip", "-br", "addr", "show", "eth1"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert ex.returncode == 0 and "198.18.1.1/30" in ex.stdout, ex.stderr
        fault = subprocess.run(
            [*carpool, "lab", "fault", "block-icmp", "--force"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert fault.returncode == 0, fault.stderr
        bad = subprocess.run(
            [*carpool, "lab", "fault", "kill", "--unit", "c", "--force"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert bad.returncode == 1 and "unknown unit" in bad.stderr
        assert Lab().switch_faults() == ["block-icmp"]
        heal = subprocess.run(
            [*carpool, "lab", "heal", "--force"], capture_output=True, text=True, timeout=60
        )
        assert heal.returncode == 0, heal.stderr
        assert Lab().switch_faults() == []
    finally:
        down = subprocess.run(
            [*carpool, "lab", "down", "--force"], capture_output=True, text=True, timeout=60
        )
    assert down.returncode == 0, down.stderr
    assert _ours() == []
