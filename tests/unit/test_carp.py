"""CARP codec against ucarp's captured adverts, plus property and fuzz tests."""

import dataclasses
import hashlib
import hmac
from ipaddress import IPv4Address

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pcap import vector

from carpool.ha.carp import BOW_OUT, CarpAdvert, carp_hmac
from carpool.ha.drops import DropError, DropReason
from carpool.ha.ipv4 import internet_checksum

SHARED = [IPv4Address("198.18.0.10")]
KEY = b"secret"  # the capture's key (ucarp -p secret): not a unit.secret
CAPTURED = [pkt.payload for _raw, pkt in vector("carp.pcap")]
MD = bytes(range(20))


def drop(data):
    with pytest.raises(DropError) as e:
        CarpAdvert.unpack(data)
    return e.value.reason


def test_vector_has_ucarp_adverts():
    assert len(CAPTURED) == 4
    for _raw, pkt in vector("carp.pcap"):
        assert (str(pkt.src), str(pkt.dst), pkt.ttl, pkt.protocol) == (
            "198.18.0.11",
            "224.0.0.18",
            255,
            112,
        )


@pytest.mark.parametrize("data", CAPTURED)
def test_decode_captured(data):
    a = CarpAdvert.unpack(data)
    assert (a.version, a.type, a.vhid, a.advskew, a.authlen, a.demote, a.advbase) == (
        2,
        1,
        10,
        0,
        7,
        0,
        1,
    )
    assert a.checksum == int.from_bytes(data[6:8], "big")
    assert a.counter == int.from_bytes(data[8:16], "big")
    assert a.md == data[16:36]
    assert a.interval == 1.0
    assert a.pack() == data


@pytest.mark.parametrize("data", CAPTURED)
def test_captured_hmac_verifies_with_secret_and_shared_address(data):
    a = CarpAdvert.unpack(data)
    assert a.verify(KEY, SHARED)
    assert a.verify(KEY, ["198.18.0.10"])  # strings are accepted too


@pytest.mark.parametrize("data", CAPTURED)
@pytest.mark.parametrize(
    "key, addresses",
    [
        (b"Secret", SHARED),
        (b"secret1", SHARED),
        (b"", SHARED),
        (hashlib.sha1(KEY).digest(), SHARED),  # the key is NOT hashed
        (KEY, [IPv4Address("198.18.0.11")]),
        (KEY, [IPv4Address("198.18.0.10"), IPv4Address("198.18.0.12")]),
        (KEY, []),
    ],
)
def test_captured_hmac_fails_with_wrong_key_or_addresses(data, key, addresses):
    assert not CarpAdvert.unpack(data).verify(key, addresses)


@pytest.mark.parametrize("data", CAPTURED)
def test_build_reproduces_ucarp_bytes(data):
    a = CarpAdvert.unpack(data)
    built = CarpAdvert.build(KEY, 10, 1, 0, 0, a.counter, SHARED)
    assert built == a
    assert built.pack() == data


def test_hmac_inner_data_layout():
    # Independent statement of the BSD/ucarp recipe: version, type, vhid, sorted addrs, counter.
    addrs = [IPv4Address("10.0.0.9"), IPv4Address("10.0.0.10"), IPv4Address("9.255.255.255")]
    inner = bytes([2, 1, 42]) + b"".join(a.packed for a in sorted(addrs)) + (7).to_bytes(8, "big")
    want = hmac.new(KEY + bytes(14), inner, hashlib.sha1).digest()
    assert carp_hmac(KEY, 42, addrs, 7) == want
    assert carp_hmac(KEY, 42, list(reversed(addrs)), 7) == want  # order given does not matter
    assert carp_hmac(KEY, 43, addrs, 7) != want
    assert carp_hmac(KEY, 42, addrs, 8) != want


def test_key_is_zero_padded_and_cut_at_20_bytes():
    assert carp_hmac(KEY + b"\0\0", 1, SHARED, 1) == carp_hmac(KEY, 1, SHARED, 1)
    long = b"k" * 20
    assert carp_hmac(long + b"ignored", 1, SHARED, 1) == carp_hmac(long, 1, SHARED, 1)


def test_build_fills_checksum_and_bow_out():
    a = CarpAdvert.build(KEY, 7, *BOW_OUT, 3, 99, SHARED)
    data = a.pack()
    assert len(data) == 36 and internet_checksum(data) == 0
    assert a.checksum == int.from_bytes(data[6:8], "big")
    assert (a.advbase, a.advskew, a.demote) == (255, 255, 3)
    assert CarpAdvert.unpack(data) == a and a.verify(KEY, SHARED)


def test_pack_ignores_stale_checksum():
    a = CarpAdvert.unpack(CAPTURED[0])
    assert dataclasses.replace(a, checksum=0).pack() == CAPTURED[0]


def valid(**changes):
    fields = dict(vhid=10, advskew=0, advbase=1, counter=5, md=MD) | changes
    return CarpAdvert(**fields).pack()


@pytest.mark.parametrize(
    "data, why",
    [
        (b"", DropReason.TOO_SHORT),
        (CAPTURED[0][:35], DropReason.TOO_SHORT),
        (CAPTURED[0] + b"\0", DropReason.BAD_LENGTH),
        (valid(version=3), DropReason.BAD_VERSION),
        (valid(version=1), DropReason.BAD_VERSION),
        (valid(type=2), DropReason.BAD_TYPE),
        (valid(authlen=6), DropReason.BAD_AUTHLEN),
        (CAPTURED[0][:6] + b"\0\0" + CAPTURED[0][8:], DropReason.BAD_CHECKSUM),
        (CAPTURED[0][:20] + b"\xff" + CAPTURED[0][21:], DropReason.BAD_CHECKSUM),
        (valid(vhid=0), DropReason.WRONG_VHID),
        (valid(advbase=0, advskew=0), DropReason.BAD_INTERVAL),
    ],
)
def test_rejections(data, why):
    assert drop(data) is why


def test_zero_advbase_with_skew_is_accepted():
    assert CarpAdvert.unpack(valid(advbase=0, advskew=100)).interval == 100 / 256


def test_vrrp2_packets_are_not_carp():
    # Same first byte 0x21: length and authlen tell them apart (DESIGN §3).
    v2 = [pkt.payload for _raw, pkt in vector("vrrp2.pcap")][0]
    assert v2[0] == CAPTURED[0][0] == 0x21
    assert drop(v2) is DropReason.TOO_SHORT
    five = bytes([0x21, 51, 150, 5, 0, 1, 0, 0]) + bytes(28)  # 5 addresses: 36 bytes too
    assert drop(five) is DropReason.BAD_AUTHLEN


@pytest.mark.parametrize(
    "bad",
    [dict(vhid=256), dict(advskew=-1), dict(counter=2**64), dict(md=b"short"), dict(version=16)],
)
def test_constructor_rejects_out_of_range(bad):
    with pytest.raises(ValueError):
        CarpAdvert(**(dict(vhid=1, advskew=0, advbase=1, counter=0, md=MD) | bad))


byte = st.integers(0, 255)
adverts = st.builds(
    CarpAdvert,
    vhid=st.integers(1, 255),
    advskew=byte,
    advbase=st.integers(1, 255),
    demote=byte,
    counter=st.integers(0, 2**64 - 1),
    md=st.binary(min_size=20, max_size=20),
)


@given(adverts)
def test_round_trip(a):
    data = a.pack()
    b = CarpAdvert.unpack(data)
    assert b == dataclasses.replace(a, checksum=b.checksum)
    assert b.pack() == data


@given(
    st.binary(max_size=20),
    st.integers(1, 255),
    st.integers(0, 2**64 - 1),
    st.lists(st.integers(0, 2**32 - 1).map(IPv4Address), max_size=4),
)
def test_build_verify_round_trip(key, vhid, counter, addrs):
    a = CarpAdvert.unpack(CarpAdvert.build(key, vhid, 1, 0, 0, counter, addrs).pack())
    assert a.verify(key, addrs)
    assert not a.verify(key + b"x" if len(key) < 20 else b"", addrs)


def assert_decodes_or_drops(data):
    try:
        CarpAdvert.unpack(data)
    except DropError as e:
        assert isinstance(e.reason, DropReason)
        return e.reason
    return None


@given(st.binary(max_size=48))
def test_fuzz_random_bytes(data):
    assert_decodes_or_drops(data)


@given(st.binary(min_size=36, max_size=36))
def test_fuzz_random_36_bytes(data):
    assert_decodes_or_drops(data)


@given(st.sampled_from(CAPTURED), st.integers(0, 35), st.integers(1, 255))
def test_any_single_byte_change_is_dropped(data, index, delta):
    mutated = bytearray(data)
    mutated[index] = (mutated[index] + delta) % 256
    assert assert_decodes_or_drops(bytes(mutated)) is not None


@given(
    st.sampled_from(CAPTURED),
    st.lists(st.tuples(st.integers(0, 40), byte), max_size=6),
    st.integers(0, 40),
)
def test_fuzz_mutated_captures(data, writes, cut):
    mutated = bytearray(data + bytes(5))
    for index, value in writes:
        mutated[index] = value
    assert_decodes_or_drops(bytes(mutated[:cut]))
    assert_decodes_or_drops(bytes(mutated))
