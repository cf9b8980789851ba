"""VRRP v3/v2 codec against keepalived's captured adverts, plus property and fuzz tests."""

import dataclasses
from ipaddress import IPv4Address

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pcap import vector

from carpool.ha.drops import DropError, DropReason
from carpool.ha.ipv4 import internet_checksum, pseudo_header
from carpool.ha.vrrp import VrrpAdvert

SRC = IPv4Address("198.18.0.11")
GROUP = IPv4Address("224.0.0.18")
SHARED = (IPv4Address("198.18.0.10"),)
V3 = vector("vrrp3.pcap")
V2 = vector("vrrp2.pcap")


def drop(data, src=SRC, dst=GROUP):
    with pytest.raises(DropError) as e:
        VrrpAdvert.unpack(data, src, dst)
    return e.value.reason


def test_vectors_present():
    assert len(V3) == 4 and len(V2) == 3
    for _raw, pkt in V3 + V2:
        assert (pkt.src, pkt.dst, pkt.ttl, pkt.protocol) == (SRC, GROUP, 255, 112)


@pytest.mark.parametrize("raw, pkt", V3)
def test_decode_keepalived_v3(raw, pkt):
    a = VrrpAdvert.unpack(pkt.payload, pkt.src, pkt.dst)
    assert a == VrrpAdvert(
        version=3, vrid=51, priority=150, interval=10, addresses=SHARED, checksum=0xCBF7
    )
    assert len(pkt.payload) == 12
    assert a.pack(pkt.src, pkt.dst) == pkt.payload


@pytest.mark.parametrize("raw, pkt", V2)
def test_decode_keepalived_v2(raw, pkt):
    a = VrrpAdvert.unpack(pkt.payload, pkt.src, pkt.dst)
    assert a == VrrpAdvert(
        version=2, vrid=51, priority=150, interval=1, addresses=SHARED, checksum=0x82AD
    )
    assert len(pkt.payload) == 20
    assert a.pack(pkt.src, pkt.dst) == pkt.payload


def test_v3_checksum_covers_pseudo_header():
    data = V3[0][1].payload
    assert internet_checksum(pseudo_header(SRC, GROUP, 112, len(data)) + data) == 0
    assert internet_checksum(data) != 0
    assert drop(data, src=IPv4Address("198.18.0.12")) is DropReason.BAD_CHECKSUM
    assert drop(data, dst=IPv4Address("198.18.0.12")) is DropReason.BAD_CHECKSUM


def test_v2_checksum_covers_packet_only():
    data = V2[0][1].payload
    assert internet_checksum(data) == 0
    other = IPv4Address("10.1.2.3")
    assert VrrpAdvert.unpack(data, other, other).pack(other, other) == data


def test_resign_and_many_addresses_round_trip():
    addrs = tuple(IPv4Address(f"198.18.0.{i}") for i in (30, 10, 20))
    a = VrrpAdvert(3, 51, 0, 100, addrs)
    b = VrrpAdvert.unpack(a.pack(SRC, GROUP), SRC, GROUP)
    assert b.priority == 0 and b.addresses == addrs  # order kept as sent


def test_v3_reserved_bits_are_ignored():
    a = VrrpAdvert(3, 51, 150, 10, SHARED)
    data = bytearray(a.pack(SRC, GROUP))
    data[4] |= 0xF0
    data[6:8] = b"\0\0"
    data[6:8] = internet_checksum(pseudo_header(SRC, GROUP, 112, 12) + data).to_bytes(2, "big")
    assert VrrpAdvert.unpack(bytes(data), SRC, GROUP).interval == 10


def v3(length=12, **changes):
    """A v3 advert with bytes overridden on the wire (b<index>=value), checksum recomputed."""
    data = bytearray(V3[0][1].payload[:length])
    for index, value in changes.items():
        data[int(index[1:])] = value
    data[6:8] = b"\0\0"
    data[6:8] = internet_checksum(pseudo_header(SRC, GROUP, 112, len(data)) + data).to_bytes(
        2, "big"
    )
    return bytes(data)


def v2(**changes):
    data = bytearray(V2[0][1].payload)
    for index, value in changes.items():
        data[int(index[1:])] = value
    data[6:8] = b"\0\0"
    data[6:8] = internet_checksum(data).to_bytes(2, "big")
    return bytes(data)


V3_DATA, V2_DATA = V3[0][1].payload, V2[0][1].payload


@pytest.mark.parametrize(
    "data, why",
    [
        (b"", DropReason.TOO_SHORT),
        (V3_DATA[:7], DropReason.TOO_SHORT),
        (V3_DATA[:11], DropReason.TOO_SHORT),
        (V3_DATA + bytes(4), DropReason.BAD_LENGTH),
        (V2_DATA[:19], DropReason.TOO_SHORT),
        (V2_DATA + b"\0", DropReason.BAD_LENGTH),
        (v3(b0=0x41), DropReason.BAD_VERSION),
        (v3(b0=0x11), DropReason.BAD_VERSION),
        (v3(b0=0x32), DropReason.BAD_TYPE),
        (V3_DATA[:4] + b"\x00\x0b" + V3_DATA[6:], DropReason.BAD_CHECKSUM),
        (V2_DATA[:-1] + b"\x01", DropReason.BAD_CHECKSUM),  # auth data is checksummed too
        (v2(b4=1), DropReason.BAD_AUTHLEN),  # simple-password auth is not supported
        (v3(b1=0), DropReason.WRONG_VHID),
        (v3(length=8, b3=0), DropReason.WRONG_ADDRESSES),
        (v3(b4=0, b5=0), DropReason.BAD_INTERVAL),
        (v2(b5=0), DropReason.BAD_INTERVAL),
    ],
)
def test_rejections(data, why):
    assert drop(data) is why


def test_fixups_above_are_meaningful():
    assert VrrpAdvert.unpack(v3(), SRC, GROUP).vrid == 51
    assert VrrpAdvert.unpack(v2(b5=3), SRC, GROUP).interval == 3


def test_carp_packets_are_not_vrrp():
    carp = vector("carp.pcap")[0][1].payload
    assert drop(carp) is DropReason.TOO_SHORT  # as VRRPv2: 7 addresses would need 44 bytes


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(version=4),
        dict(vrid=0),
        dict(vrid=256),
        dict(priority=256),
        dict(interval=0),
        dict(interval=4096),
        dict(version=2, interval=256),
        dict(addresses=()),
    ],
)
def test_constructor_rejects_out_of_range(kwargs):
    with pytest.raises(ValueError):
        VrrpAdvert(
            **(dict(version=3, vrid=1, priority=100, interval=100, addresses=SHARED) | kwargs)
        )


addresses = st.integers(0, 2**32 - 1).map(IPv4Address)


@st.composite
def adverts(draw):
    version = draw(st.sampled_from([2, 3]))
    return VrrpAdvert(
        version=version,
        vrid=draw(st.integers(1, 255)),
        priority=draw(st.integers(0, 255)),
        interval=draw(st.integers(1, 0xFFF if version == 3 else 0xFF)),
        addresses=tuple(draw(st.lists(addresses, min_size=1, max_size=20))),
    )


@given(adverts(), addresses, addresses)
def test_round_trip(a, src, dst):
    data = a.pack(src, dst)
    assert len(data) == 8 + 4 * len(a.addresses) + (8 if a.version == 2 else 0)
    b = VrrpAdvert.unpack(data, src, dst)
    assert b == dataclasses.replace(a, checksum=b.checksum)
    assert b.pack(src, dst) == data


def decodes_or_drops(data, src=SRC, dst=GROUP):
    try:
        VrrpAdvert.unpack(data, src, dst)
    except DropError as e:
        assert isinstance(e.reason, DropReason)
        return e.reason
    return None


@given(st.binary(max_size=60), addresses, addresses)
def test_fuzz_random_bytes(data, src, dst):
    decodes_or_drops(data, src, dst)


@given(st.sampled_from([0x21, 0x31]), st.integers(0, 4), st.binary(max_size=40))
def test_fuzz_plausible_headers(first, count, rest):
    decodes_or_drops(bytes([first, 51, 150, count]) + rest)


@given(st.sampled_from([V3_DATA, V2_DATA]), st.integers(0, 19), st.integers(1, 255))
def test_any_single_byte_change_is_dropped(data, index, delta):
    mutated = bytearray(data)
    index %= len(data)  # v2 auth data too: the v2 checksum covers it
    mutated[index] = (mutated[index] + delta) % 256
    assert decodes_or_drops(bytes(mutated)) is not None


@given(
    st.sampled_from([V3_DATA, V2_DATA]),
    st.lists(st.tuples(st.integers(0, 24), st.integers(0, 255)), max_size=6),
    st.integers(0, 24),
)
def test_fuzz_mutated_captures(data, writes, cut):
    mutated = bytearray(data + bytes(5))
    for index, value in writes:
        mutated[index % len(mutated)] = value
    decodes_or_drops(bytes(mutated[:cut]))
    decodes_or_drops(bytes(mutated))
