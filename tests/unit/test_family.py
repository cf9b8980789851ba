"""The address-family seam (carpool/family.py): one table of what differs between IPv4 and
IPv6, and every per-family choice elsewhere read from it."""

from ipaddress import IPv4Address, IPv6Address

import pytest

from carpool import family
from carpool.dataplane import nft
from carpool.node.rawsock import destinations


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        (IPv4Address("198.18.0.10"), family.IPV4),
        (IPv6Address("2001:2::10"), family.IPV6),
        ("198.18.0.10/24", family.IPV4),
        ("2001:2::10/64", family.IPV6),
        ("fe80::1%eth0", family.IPV6),
    ],
)
def test_of_names_the_family_of_an_address_or_its_text(address, expected):
    assert family.of(address) is expected


def test_the_table_is_what_the_protocols_say():
    v4, v6 = family.IPV4, family.IPV6
    assert (str(v4.group), str(v6.group)) == ("224.0.0.18", "ff02::12")
    assert (v4.echo_request, v4.echo_reply, v6.echo_request, v6.echo_reply) == (8, 0, 128, 129)
    assert (v4.nft, v6.nft, v4.nft_type, v6.nft_type) == ("ip", "ip6", "ipv4_addr", "ipv6_addr")
    assert str(v6) == "IPv6" and "neighbour" in v6.announcement


def test_advert_destinations_and_nft_families_come_from_the_table():
    for f, partner in ((family.IPV4, "198.18.0.12"), (family.IPV6, "2001:2::12")):
        address = f.group.__class__(partner)
        assert destinations("multicast", address) == [f.group]
        assert destinations("broadcast", address) == [f.broadcast]
        assert destinations("unicast", address) == [address]
        assert nft.family_of(partner) == f.nft
