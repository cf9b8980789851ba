"""Where adverts go, per family (issue 14): the group, the partner, or the link's broadcast —
which IPv6 does not have (its all-nodes group reaches the same hosts)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

import pytest

from carpool.node.rawsock import destinations

V4, V6 = IPv4Address("198.18.0.12"), IPv6Address("fe80::12")


@pytest.mark.parametrize(
    "transport, v4, v6",
    [
        ("multicast", "224.0.0.18", "ff02::12"),
        ("unicast", "198.18.0.12", "fe80::12"),
        ("broadcast", "255.255.255.255", "ff02::1"),
    ],
)
def test_each_transport_in_each_family(transport, v4, v6):
    assert destinations(transport, V4) == [IPv4Address(v4)]
    assert destinations(transport, V6) == [IPv6Address(v6)]


def test_an_unknown_transport_is_named():
    with pytest.raises(ValueError, match="anycast"):
        destinations("anycast", V6)
