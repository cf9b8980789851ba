"""The lab's network (DESIGN §5): names, addresses, build and tear-down.

                       cp-sw: bridges `lan` and `srv`
    cp-c1 eth0 ---- c1 [lan] a-eth0 ---- eth0 cp-a eth2 ---- a-eth2 [srv] r1 ---- eth0 cp-r1
    root cp-host -- host   b-eth0 ---- eth0 cp-b eth2 ---- b-eth2       r2 ---- eth0 cp-r2 ...
                                  cp-a eth1 ====== cp-b eth1  (direct heartbeat cable)

Only 198.18.0.0/15 is used: lan 198.18.0.0/24 (shared .10, A .11, B .12, client .100, host .254),
heartbeat 198.18.1.0/30 (A .1, B .2), srv 198.18.2.0/24 (shared gateway .1, A .11, B .12, real
servers .101+). Interfaces get MACs 02:00:<their IPv4 address in hex> so captures read easily.

Dual-stack: IPv6 from the benchmarking prefix 2001:2::/48 (RFC 5180) beside it, the same host
numbers: lan 2001:2::/64 (shared ::10, A ::11, B ::12, client ::100, host ::fe), heartbeat 2001:2:0:1::/64
(A ::1, B ::2), srv 2001:2:0:2::/64 (shared gateway ::1, A ::11, B ::12, real servers ::101+), and
each interface's link-local address (from its MAC). No DAD, router advertisements or SLAAC in
the lab (addresses usable at once, none outside the range); the host's end has no link-local.
IPv6-only (`carpool lab up --ipv6-only`): the same picture without an IPv4 address on any lab
interface (MACs still named after the IPv4 plan).
The bridges do not snoop multicast: a plain switch (block-multicast is the fault that drops it).
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping

from .ns import LabError, LabTimeout, ip, namespaces, sh, wait_for

UNITS = ("a", "b")
ROLES = {"a": "first", "b": "second"}
SWITCH = "cp-sw"
CLIENT = "cp-c1"
BRIDGES = ("lan", "srv")
HOST_IF = "cp-host"  # in the root namespace; its peer is `host` on lan
HOST_ADDR = "198.18.0.254/24"
HOST_ADDR6 = "2001:2::fe/64"  # the host reaches an IPv6-only pair's WUI (the browser tests)
CLIENT_ADDR = "198.18.0.100/24"
SHARED_LAN = "198.18.0.10/24"
SHARED_SRV = "198.18.2.1/24"  # the real servers' default gateway
HEARTBEAT = "eth1"
UNIT_ADDR = {
    "a": {"eth0": "198.18.0.11/24", "eth1": "198.18.1.1/30", "eth2": "198.18.2.11/24"},
    "b": {"eth0": "198.18.0.12/24", "eth1": "198.18.1.2/30", "eth2": "198.18.2.12/24"},
}
UNIT_ADDR6 = {
    "a": {"eth0": "2001:2::11/64", "eth1": "2001:2:0:1::1/64", "eth2": "2001:2:0:2::11/64"},
    "b": {"eth0": "2001:2::12/64", "eth1": "2001:2:0:1::2/64", "eth2": "2001:2:0:2::12/64"},
}
CLIENT_ADDR6 = "2001:2::100/64"
SHARED_LAN6 = "2001:2::10/64"
SHARED_SRV6 = "2001:2:0:2::1/64"
UNIT_BRIDGE = {"eth0": "lan", "eth2": "srv"}
MAX_SERVERS = 99
# Every namespace the lab may have made (and nothing else: tests' own cp-t-* are not ours).
LAB_NS = re.compile(r"^cp-(a|b|sw|c[0-9]+|r[0-9]+)$")
IPV4_RANGE = ipaddress.IPv4Network("198.18.0.0/15")
OPERATIONAL_TIMEOUT = 5.0  # s for every link of a new lab to carry frames


def unit_ns(unit: str) -> str:
    return f"cp-{unit}"


def server_ns(i: int) -> str:
    return f"cp-r{i}"


def server_addr(i: int) -> str:
    return f"198.18.2.{100 + i}"


def server_addr6(i: int) -> str:
    return f"2001:2:0:2::{100 + i}"


def link_local_for(cidr: str) -> str:
    """The link-local address the kernel derives (EUI-64) from mac_for(cidr)."""
    mac = bytearray(b"\x02\x00" + ipaddress.IPv4Interface(cidr).ip.packed)
    mac[0] ^= 0x02  # the universal/local bit flipped (RFC 4291 appendix A)
    eui = bytes(mac[:3]) + b"\xff\xfe" + bytes(mac[3:])
    return str(ipaddress.IPv6Address(b"\xfe\x80" + b"\0" * 6 + eui))


def mac_for(cidr: str) -> str:
    """02:00:c6:12:00:0b for 198.18.0.11: locally administered, readable in a capture."""
    packed = ipaddress.IPv4Interface(cidr).ip.packed
    return "02:00:" + ":".join(f"{b:02x}" for b in packed)


def lab_namespaces() -> list[str]:
    return [n for n in namespaces() if LAB_NS.match(n)]


def base_addresses(ns: str) -> dict[str, str]:
    """ifname -> the IPv4 address the lab gives it, in a lab namespace (not the shared ones)."""
    for unit in UNITS:
        if ns == unit_ns(unit):
            return dict(UNIT_ADDR[unit])
    if ns == CLIENT:
        return {"eth0": CLIENT_ADDR}
    m = re.fullmatch(r"cp-r([0-9]+)", ns)
    if m:
        return {"eth0": f"{server_addr(int(m.group(1)))}/24"}
    return {}


def _sysctls(ns: str, values: dict[str, str | int]) -> None:
    # -e: net.bridge.* exists only while br_netfilter is loaded (and then it must be 0 here).
    sh(["sysctl", "-q", "-e", "-w", *(f"{k}={v}" for k, v in values.items())], ns=ns)


def _add_ns(ns: str, extra: Mapping[str, str | int] | None = None) -> None:
    ip("netns", "add", ns)
    ip("link", "set", "lo", "up", ns=ns)
    # Before any link exists, so that every interface inherits the defaults.
    _sysctls(
        ns,
        {
            **{
                f"net.ipv6.conf.{which}.{key}": value
                for which in ("all", "default")
                for key, value in (
                    ("disable_ipv6", 0),
                    ("accept_dad", 0),
                    ("dad_transmits", 0),
                    ("accept_ra", 0),
                    ("autoconf", 0),
                )
            },
            **(extra or {}),
        },
    )


def _veth(
    ns: str,
    name: str,
    address: str | None,
    peer_ns: str | None,
    peer: str,
    address6: str | None = None,
    ipv4: bool = True,
) -> None:
    """A veth pair: `name` (with addresses and readable MAC) in ns, `peer` in peer_ns; without
    ipv4, `address` names the MAC only."""
    mac = ("address", mac_for(address)) if address else ()
    ip(
        "link",
        "add",
        name,
        *mac,
        "netns",
        ns,
        "type",
        "veth",
        "peer",
        "name",
        peer,
        *(("netns", peer_ns) if peer_ns else ()),
    )
    if address and ipv4:
        ip("addr", "add", address, "dev", name, ns=ns)
    if address6:
        ip("addr", "add", address6, "dev", name, "nodad", ns=ns)


def _port(port: str, bridge: str) -> None:
    ip("link", "set", port, "master", bridge, "up", ns=SWITCH)


def build(servers: int, ipv6_only: bool = False) -> None:
    """Make the whole topology (without IPv4 on the lab's links with ipv6_only). Raises
    LabError; the caller tears a half-built lab down."""
    v4 = not ipv6_only
    if not 0 <= servers <= MAX_SERVERS:
        raise LabError(f"servers: 0..{MAX_SERVERS}, not {servers}")
    clash = [n for n in (SWITCH, CLIENT, *map(unit_ns, UNITS)) if n in namespaces()]
    if clash:
        raise LabError(f"namespaces {clash} exist already: run `carpool lab down` first")
    arp_accept = {"net.ipv4.conf.all.arp_accept": 1, "net.ipv4.conf.default.arp_accept": 1}

    _add_ns(
        SWITCH,
        {  # a plain switch: no address of its own in either family
            "net.ipv6.conf.all.disable_ipv6": 1,
            "net.ipv6.conf.default.disable_ipv6": 1,
            "net.bridge.bridge-nf-call-iptables": 0,
            "net.bridge.bridge-nf-call-ip6tables": 0,
            "net.bridge.bridge-nf-call-arptables": 0,
        },
    )
    for bridge in BRIDGES:
        ip(
            "link",
            "add",
            bridge,
            "type",
            "bridge",
            "stp_state",
            "0",
            "mcast_snooping",
            "0",
            ns=SWITCH,
        )
        ip("link", "set", bridge, "up", ns=SWITCH)

    for unit in UNITS:
        # Units forward: the real servers route through the active unit (DESIGN §7).
        _add_ns(unit_ns(unit), {"net.ipv4.ip_forward": 1})
    for unit in UNITS:
        for ifname, bridge in UNIT_BRIDGE.items():
            _veth(
                unit_ns(unit),
                ifname,
                UNIT_ADDR[unit][ifname],
                SWITCH,
                f"{unit}-{ifname}",
                UNIT_ADDR6[unit][ifname],
                ipv4=v4,
            )
            _port(f"{unit}-{ifname}", bridge)
    _veth(
        unit_ns("a"),
        HEARTBEAT,
        UNIT_ADDR["a"][HEARTBEAT],
        unit_ns("b"),
        HEARTBEAT,
        UNIT_ADDR6["a"][HEARTBEAT],
        ipv4=v4,
    )
    ip("link", "set", HEARTBEAT, "address", mac_for(UNIT_ADDR["b"][HEARTBEAT]), ns=unit_ns("b"))
    if v4:
        ip("addr", "add", UNIT_ADDR["b"][HEARTBEAT], "dev", HEARTBEAT, ns=unit_ns("b"))
    ip("addr", "add", UNIT_ADDR6["b"][HEARTBEAT], "dev", HEARTBEAT, "nodad", ns=unit_ns("b"))
    for unit in UNITS:
        for ifname in UNIT_ADDR[unit]:
            ip("link", "set", ifname, "up", ns=unit_ns(unit))

    _add_ns(CLIENT, arp_accept)
    _veth(CLIENT, "eth0", CLIENT_ADDR, SWITCH, "c1", CLIENT_ADDR6, ipv4=v4)
    _port("c1", "lan")
    ip("link", "set", "eth0", "up", ns=CLIENT)
    if v4:
        ip("route", "add", "default", "via", _ip(SHARED_LAN), ns=CLIENT)
    ip("-6", "route", "add", "default", "via", _ip(SHARED_LAN6), ns=CLIENT)

    for i in range(1, servers + 1):
        ns = server_ns(i)
        _add_ns(ns, arp_accept)
        _veth(ns, "eth0", f"{server_addr(i)}/24", SWITCH, f"r{i}", f"{server_addr6(i)}/64", ipv4=v4)
        _port(f"r{i}", "srv")
        ip("link", "set", "eth0", "up", ns=ns)
        if v4:
            ip("route", "add", "default", "via", _ip(SHARED_SRV), ns=ns)
        ip("-6", "route", "add", "default", "via", _ip(SHARED_SRV6), ns=ns)

    # The host (root namespace) on lan: no link-local address (nothing of the lab's on the
    # host but its own prefixes), the IPv6 one without DAD like every lab address.
    ip(
        "link",
        "add",
        HOST_IF,
        "address",
        mac_for(HOST_ADDR),
        "type",
        "veth",
        "peer",
        "name",
        "host",
        "netns",
        SWITCH,
    )
    ip("link", "set", HOST_IF, "addrgenmode", "none")
    ip("addr", "add", HOST_ADDR, "dev", HOST_IF)
    ip("addr", "add", HOST_ADDR6, "dev", HOST_IF, "nodad")
    ip("link", "set", HOST_IF, "up")
    _port("host", "lan")

    # A veth just set up has no carrier for a moment and drops what is sent (a fresh clone's
    # first test pinged right after `lab up` and lost its one echo): done when all carry frames.
    try:
        wait_for(lambda: not not_operational(), OPERATIONAL_TIMEOUT, what="lab links operational")
    except LabTimeout:
        raise LabError(
            f"links not operational after {OPERATIONAL_TIMEOUT:g} s: {', '.join(not_operational())}"
        ) from None


def not_operational() -> list[str]:
    """The lab's links (and the host's end) that do not carry frames yet: ns:ifname."""
    waiting = [
        f"{ns}:{link['ifname']}"
        for ns in lab_namespaces()
        for link in links(ns)
        if link["ifname"] != "lo" and link.get("operstate") not in ("UP", "UNKNOWN")
    ]
    out = ip("-j", "link", "show", "dev", HOST_IF, check=False).stdout
    waiting += [
        HOST_IF
        for link in (json.loads(out) if out.strip() else [])
        if link.get("operstate") not in ("UP", "UNKNOWN")
    ]
    return waiting


def _ip(cidr: str) -> str:
    return cidr.split("/")[0]


def remove_network() -> list[str]:
    """Delete the host veth and every lab namespace (processes must be gone first).
    Returns what was removed. Safe on a half-built or absent lab."""
    removed = []
    if ip("link", "show", "dev", HOST_IF, check=False).returncode == 0:
        ip("link", "del", HOST_IF)
        removed.append(HOST_IF)
    for ns in lab_namespaces():
        ip("netns", "delete", ns)
        removed.append(ns)
    return removed


def links(ns: str) -> list[dict]:
    """`ip -j link` of a namespace: [{"ifname", "flags", "operstate", "link_type", ...}]."""
    out = ip("-j", "link", "show", ns=ns).stdout
    return json.loads(out) if out.strip() else []
