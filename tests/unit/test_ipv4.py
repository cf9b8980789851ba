"""IPv4 parsing of raw-socket datagrams and the Internet checksum."""

import struct
from ipaddress import IPv4Address

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pcap import VECTORS, read_pcap, vector

from carpool.ha.drops import DropError, DropReason
from carpool.ha.ipv4 import Ipv4Packet, internet_checksum, parse_ipv4, pseudo_header

A = IPv4Address("198.18.0.11")
GROUP = IPv4Address("224.0.0.18")


def header(total, ihl=5, version=4, frag=0x4000, ttl=255, proto=112, options=b""):
    """An IPv4 header with a correct checksum, built independently of Ipv4Packet.pack()."""
    raw = (
        struct.pack(
            "!BBHHHBBH4s4s",
            version << 4 | ihl,
            0,
            total,
            1,
            frag,
            ttl,
            proto,
            0,
            A.packed,
            GROUP.packed,
        )
        + options
    )
    csum = internet_checksum(raw)
    return raw[:10] + struct.pack("!H", csum) + raw[12:]


def reason(data):
    with pytest.raises(DropError) as e:
        parse_ipv4(data)
    return e.value.reason


def test_checksum_rfc1071_example():
    # RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2; the checksum is its complement.
    assert internet_checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0xFFFF - 0xDDF2


def test_checksum_odd_length_pads_with_zero():
    assert internet_checksum(b"\x12\x34\x56") == internet_checksum(b"\x12\x34\x56\x00")
    assert internet_checksum(b"") == 0xFFFF


def test_captured_headers_checksum_to_zero():
    for _ts, frame in read_pcap(VECTORS / "carp.pcap"):
        ihl = (frame[14] & 0x0F) * 4
        assert internet_checksum(frame[14 : 14 + ihl]) == 0


def test_parse_captured_carp():
    packets = vector("carp.pcap")
    assert len(packets) == 4
    for raw, pkt in packets:
        assert (pkt.src, pkt.dst, pkt.ttl, pkt.protocol) == (A, GROUP, 255, 112)
        assert pkt.payload == raw[20:] and len(pkt.payload) == 36


def test_options_are_skipped():
    payload = b"\x31\x33" + bytes(10)
    opts = b"\x94\x04\x00\x00"  # router alert, as VRRP/IGMP senders may add
    pkt = parse_ipv4(header(24 + len(payload), ihl=6, options=opts) + payload)
    assert pkt.payload == payload


def test_padding_after_total_length_is_not_payload():
    payload = b"x" * 12
    pkt = parse_ipv4(header(32) + payload + bytes(14))  # Ethernet minimum-frame padding
    assert pkt.payload == payload


def test_pack_round_trip_and_valid_header():
    pkt = Ipv4Packet(A, GROUP, 255, 112, b"hello")
    raw = pkt.pack()
    assert internet_checksum(raw[:20]) == 0
    assert parse_ipv4(raw) == pkt


@pytest.mark.parametrize(
    "data, why",
    [
        (b"", DropReason.TOO_SHORT),
        (bytes(19), DropReason.TOO_SHORT),
        (header(20, version=6), DropReason.BAD_IP_HEADER),
        (header(20, ihl=4), DropReason.BAD_IP_HEADER),
        (header(19), DropReason.BAD_IP_HEADER),  # total length shorter than the header
        (header(24, ihl=6), DropReason.TOO_SHORT),  # options announced, not there
        (header(40) + bytes(10), DropReason.TOO_SHORT),  # truncated payload
        (header(30, frag=0x2000) + bytes(10), DropReason.BAD_IP_HEADER),  # first fragment
        (header(30, frag=0x0001) + bytes(10), DropReason.BAD_IP_HEADER),  # later fragment
    ],
)
def test_rejections(data, why):
    assert reason(data) is why


def test_pseudo_header_layout():
    assert pseudo_header(A, GROUP, 112, 12) == A.packed + GROUP.packed + b"\x00\x70\x00\x0c"


addresses = st.integers(0, 2**32 - 1).map(IPv4Address)


@given(addresses, addresses, st.integers(0, 255), st.integers(0, 255), st.binary(max_size=100))
def test_round_trip(src, dst, ttl, proto, payload):
    pkt = Ipv4Packet(src, dst, ttl, proto, payload)
    assert parse_ipv4(pkt.pack()) == pkt


@given(st.binary(max_size=80))
def test_fuzz_random_bytes_only_drop_errors(data):
    try:
        pkt = parse_ipv4(data)
    except DropError as e:
        assert e.reason in (DropReason.TOO_SHORT, DropReason.BAD_IP_HEADER)
    else:
        assert len(pkt.payload) <= len(data) - 20


@given(st.binary(min_size=20, max_size=20), st.binary(max_size=60))
def test_fuzz_random_headers_only_drop_errors(head, tail):
    # Force version 4 half the time so the later checks are reached too.
    for data in (head + tail, bytes([0x40 | head[0] & 0x0F]) + head[1:] + tail):
        try:
            parse_ipv4(data)
        except DropError as e:
            assert e.reason in (DropReason.TOO_SHORT, DropReason.BAD_IP_HEADER)
