"""The receive path's one judge: every protocol-112 datagram is an advert, a probe or a drop
with its reason — against ucarp's captured adverts and built ones, never an exception."""

from ipaddress import IPv4Address

from hypothesis import given
from hypothesis import strategies as st
from pcap import vector

from carpool.ha import probe
from carpool.ha.classify import Kind, classify
from carpool.ha.drops import DropReason
from carpool.ha.ipv4 import Ipv4Packet
from carpool.ha.profile import CarpProfile, VrrpProfile

UCARP = IPv4Address("198.18.0.11")  # the captured sender
SHARED = [IPv4Address("198.18.0.10")]
# the capture's key (ucarp -p secret: not a unit.secret), vhid, advbase, advskew
CARP = CarpProfile(b"secret", 10, 1, 0)
RAW = [pkt.pack() for _raw, pkt in vector("carp.pcap")]  # as a raw socket hands them over


def judge(datagram, partner=UCARP, decoder=CARP, vhid=10, addresses=SHARED):
    return classify(datagram, partner=partner, vhid=vhid, decoder=decoder, addresses=addresses)


def test_captured_ucarp_advert_is_an_advert_of_the_partner():
    v = judge(RAW[0])
    assert v.kind is Kind.ADVERT and v.source == UCARP and not v.foreign
    assert v.heard.rank.preference == 256 and not v.heard.bow_out


def test_a_valid_advert_from_anyone_but_the_partner_is_dropped_and_marked_foreign():
    # the partner on this link is .2: the same advert from .11 never reaches the election
    v = judge(RAW[0], partner=IPv4Address("198.18.0.2"))
    assert (v.kind, v.reason, v.foreign) == (Kind.DROP, DropReason.NOT_PARTNER, True)
    assert v.source == UCARP and v.payload == RAW[0][20:]  # for the doctor's table


def test_a_stranger_of_another_vhid_is_dropped_not_foreign():
    v = judge(RAW[0], partner=IPv4Address("198.18.0.2"), vhid=11)
    assert (v.kind, v.reason, v.foreign) == (Kind.DROP, DropReason.NOT_PARTNER, False)


def test_wrong_secret_from_the_partner_is_a_counted_drop():
    v = judge(RAW[0], decoder=CarpProfile(b"not-the-pair-secret", 10, 1, 0))
    assert (v.kind, v.reason, v.foreign) == (Kind.DROP, DropReason.BAD_HMAC, False)


def test_ttl_below_255_is_dropped_before_decoding():
    pkt = Ipv4Packet(UCARP, IPv4Address("224.0.0.18"), 254, 112, RAW[0][20:])
    assert judge(pkt.pack()).reason is DropReason.BAD_TTL


def test_other_protocol_and_garbage_are_drops():
    pkt = Ipv4Packet(UCARP, IPv4Address("224.0.0.18"), 255, 17, RAW[0][20:])
    assert judge(pkt.pack()).reason is DropReason.BAD_PROTOCOL
    assert judge(b"\x45").reason is DropReason.TOO_SHORT


def test_doctor_probe_goes_to_the_doctor_not_the_decoder():
    payload = probe.encode(probe.probe_key(b"unit-test-secret"), {"k": "probe", "id": "ab"})
    pkt = Ipv4Packet(UCARP, IPv4Address("224.0.0.18"), 255, 112, payload)
    v = judge(pkt.pack(), decoder=VrrpProfile(10, 100, 100))
    assert (v.kind, v.payload) == (Kind.PROBE, payload)


def test_vrrp_profile_reads_its_own_encoding():
    prof = VrrpProfile(51, 150, 100)
    src, dst = IPv4Address("198.18.0.2"), IPv4Address("224.0.0.18")
    payload = prof.encode(False, 0, 0, SHARED, src, dst)
    v = judge(Ipv4Packet(src, dst, 255, 112, payload).pack(), partner=src, decoder=prof, vhid=51)
    assert v.kind is Kind.ADVERT and v.heard.rank.preference == 255 - 150


@given(st.binary(max_size=200))
def test_any_bytes_get_a_verdict(data):
    v = judge(data)
    assert v.kind in Kind and (v.kind is not Kind.DROP or v.reason is not None)
