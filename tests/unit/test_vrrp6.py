"""VRRPv3 over IPv6 (RFC 9568, as keepalived sends it), the codec: 16-byte addresses counted by
the count field, the checksum over the IPv6 pseudo-header (built here independently, RFC 8200
§8.1) and the packet; the family is the sender's. A keepalived capture is still to come (issue
14's lab vectors)."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address

import pytest

from carpool.ha.drops import DropError, DropReason
from carpool.ha.ipv4 import internet_checksum
from carpool.ha.vrrp import VrrpAdvert

SRC, DST = IPv6Address("fe80::200:5eff:fe00:201"), IPv6Address("ff02::12")
SHARED = (IPv6Address("2001:2::10"), IPv6Address("2001:2:0:2::1"))


def test_round_trip_with_the_ipv6_pseudo_header():
    packed = VrrpAdvert(3, 51, 150, 100, SHARED).pack(SRC, DST)
    assert len(packed) == 8 + 16 * 2 and packed[3] == 2
    pseudo = SRC.packed + DST.packed + struct.pack("!I", len(packed)) + b"\0\0\0" + bytes([112])
    assert internet_checksum(pseudo + packed) == 0
    back = VrrpAdvert.unpack(packed, SRC, DST)
    assert (back.vrid, back.priority, back.interval, back.addresses) == (51, 150, 100, SHARED)


def test_a_wrong_checksum_or_length_is_a_drop():
    packed = bytearray(VrrpAdvert(3, 51, 150, 100, SHARED).pack(SRC, DST))
    with pytest.raises(DropError) as e:
        VrrpAdvert.unpack(bytes(packed), IPv6Address("fe80::1"), DST)  # another sender
    assert e.value.reason is DropReason.BAD_CHECKSUM
    with pytest.raises(DropError) as e:
        VrrpAdvert.unpack(bytes(packed[:-4]), SRC, DST)
    assert e.value.reason is DropReason.TOO_SHORT
    with pytest.raises(DropError) as e:
        VrrpAdvert.unpack(bytes(packed), SRC, IPv4Address("224.0.0.18"))
    assert e.value.reason is DropReason.BAD_IP_HEADER


def test_one_family_per_advert_and_no_vrrpv2_over_ipv6():
    with pytest.raises(ValueError):
        VrrpAdvert(3, 1, 100, 100, (SHARED[0], IPv4Address("198.18.0.10")))
    with pytest.raises(ValueError):
        VrrpAdvert(2, 1, 100, 1, SHARED)


def test_keepalived_vrrpv3_ipv6_adverts_decode_and_ours_are_the_same_bytes():
    """tests/vectors/vrrp3-ipv6.pcap (keepalived 2.2, captured by capture.py): from its
    link-local address to ff02::12, hop limit 255, the checksum over the IPv6 pseudo-header
    verified; carpool's VRRP profile encodes the same advert byte for byte."""
    from pcap import VECTORS, read_pcap

    from carpool.ha import ipv6
    from carpool.ha.profile import VrrpProfile

    frames = [frame for _ts, frame in read_pcap(VECTORS / "vrrp3-ipv6.pcap")]
    assert len(frames) == 4
    for frame in frames:
        src, dst = IPv6Address(frame[22:38]), IPv6Address(frame[38:54])
        assert src.is_link_local and dst == ipv6.GROUP and frame[21] == ipv6.HOP_LIMIT
        advert = VrrpAdvert.unpack(frame[54:], src, dst)
        assert (advert.vrid, advert.priority, advert.interval) == (51, 150, 10)
        assert advert.addresses == (IPv6Address("2001:2::10"),)
        ours = VrrpProfile(51, 150, 10).encode(
            False, 0, 0, [IPv4Address("198.18.0.10"), IPv6Address("2001:2::10")], src, dst
        )
        assert ours == frame[54:]  # the IPv4 address is not carried in an IPv6 advert
