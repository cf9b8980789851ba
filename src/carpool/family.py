"""What differs between IPv4 and IPv6, in one place: where adverts go, how a takeover is
announced, which echo the checks send, and what nftables calls the family. Everything else
takes an address (an `ipaddress` object) and asks `of(address)`.

    f = of(partner)          # IPV4 or IPV6
    f.group                  # 224.0.0.18 / ff02::12: CARP and VRRP adverts
    f.nft, f.nft_type        # "ip", "ipv4_addr" / "ip6", "ipv6_addr"
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address

Address = IPv4Address | IPv6Address


@dataclass(frozen=True)
class Family:
    version: int
    name: str  # in messages: IPv4, IPv6
    group: Address  # the CARP/VRRP group
    broadcast: Address  # the broadcast transport's destination (IPv6 has all-nodes instead)
    announcement: str  # how a takeover is announced on the link
    echo_request: int  # ICMP / ICMPv6 types
    echo_reply: int
    icmp: str  # nftables' name of its ICMP (reject type)
    nft: str  # nftables family
    nft_type: str  # nftables set element type

    def __str__(self) -> str:
        return self.name


IPV4 = Family(
    version=4,
    name="IPv4",
    group=IPv4Address("224.0.0.18"),
    broadcast=IPv4Address("255.255.255.255"),  # the limited broadcast: never routed
    announcement="gratuitous ARP",
    echo_request=8,
    echo_reply=0,
    icmp="icmp",
    nft="ip",
    nft_type="ipv4_addr",
)
IPV6 = Family(
    version=6,
    name="IPv6",
    group=IPv6Address("ff02::12"),
    broadcast=IPv6Address("ff02::1"),  # all nodes
    announcement="unsolicited neighbour advertisement",
    echo_request=128,
    echo_reply=129,
    icmp="icmpv6",
    nft="ip6",
    nft_type="ipv6_addr",
)
FAMILIES = (IPV4, IPV6)


def of(address: Address | str) -> Family:
    """The family of an address (or of its text, a prefix length or IPv6 scope allowed)."""
    if isinstance(address, str):
        address = ip_address(address.split("/", 1)[0].split("%", 1)[0])
    return IPV6 if address.version == 6 else IPV4


def hostport(address: object, port: int) -> str:
    """address:port as URLs, HAProxy and the WUI write it: an IPv6 address in brackets."""
    text = str(address)
    return f"[{text}]:{port}" if ":" in text else f"{text}:{port}"
