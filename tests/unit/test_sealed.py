"""The carpool advert (ha.auth = "carpool"): every field under the MAC, bound to its sender's
address and the shared addresses, a counter that must rise per path, the older form understood
for a rolling upgrade; and the counter that rises across restarts."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carpool.ha.carp import CarpAdvert
from carpool.ha.drops import DropError, DropReason
from carpool.ha.ipv4 import Ipv4Packet
from carpool.ha.profile import CarpProfile, SealedProfile, VrrpProfile
from carpool.ha.replay import ReplayGuard
from carpool.ha.sealed import SIZE, advert_key, is_sealed, open_sealed
from carpool.node.counter import RESERVE, AdvertCounter

SECRET = b"unit-test-secret"
PARTNER, STRANGER = IPv4Address("198.18.0.12"), IPv4Address("198.18.0.250")
GROUP = IPv4Address("224.0.0.18")
SHARED = [IPv4Address("198.18.0.10"), IPv4Address("198.18.2.1")]
CARP = CarpProfile(SECRET, 1, 1, 0)
SEALED = SealedProfile(CARP, advert_key(SECRET), 1)


def packet(payload: bytes, src: IPv4Address = PARTNER) -> Ipv4Packet:
    return Ipv4Packet(src, GROUP, 255, 112, payload)


def sealed(bow_out=False, demote=0, counter=7, src=PARTNER, profile=SEALED) -> bytes:
    return profile.encode(bow_out, demote, counter, SHARED, src, GROUP)


def test_round_trip_carries_rank_bow_out_and_counter():
    payload = sealed(demote=3, counter=2**40 + 5)
    assert len(payload) == SIZE and is_sealed(payload)
    heard = SEALED.decode(packet(payload), SHARED)
    assert (heard.form, heard.counter, heard.bow_out) == ("carpool", 2**40 + 5, False)
    assert (heard.rank.demote, heard.rank.preference) == (3, 256)  # advbase 1, advskew 0
    assert SEALED.decode(packet(sealed(bow_out=True)), SHARED).bow_out


def test_the_fast_profile_is_sealed_with_its_own_rank_and_interval():
    fast = SealedProfile(VrrpProfile(1, 200, 2), advert_key(SECRET), 1)
    heard = fast.decode(packet(sealed(profile=fast)), SHARED)
    assert heard.form == "carpool" and heard.rank.preference == 255 - 200


@given(st.integers(0, SIZE - 1), st.integers(1, 255))
def test_any_changed_byte_is_dropped(at, flip):
    # the finding: advskew, advbase and demote were outside CARP's HMAC
    payload = bytearray(sealed())
    payload[at] ^= flip
    with pytest.raises(DropError):
        SEALED.decode(packet(bytes(payload)), SHARED)


def test_a_copy_from_another_source_or_for_other_addresses_fails_the_mac():
    payload = sealed()
    for pkt, shared in ((packet(payload, STRANGER), SHARED), (packet(payload), SHARED[:1])):
        with pytest.raises(DropError) as err:
            SEALED.decode(pkt, shared)
        assert err.value.reason is DropReason.BAD_HMAC


def test_wrong_secret_fails_and_the_key_is_not_carps():
    other = SealedProfile(CARP, advert_key(b"another-secret-here"), 1)
    with pytest.raises(DropError) as err:
        other.decode(packet(sealed()), SHARED)
    assert err.value.reason is DropReason.BAD_HMAC
    assert advert_key(SECRET) != SECRET[:20].ljust(20, b"\0")


def test_the_older_form_is_understood_and_named():
    legacy = SEALED.base.encode(False, 0, 9, SHARED, PARTNER, GROUP)
    assert CarpAdvert.unpack(legacy).verify(SECRET, SHARED)  # what an older release sends
    heard = SEALED.decode(packet(legacy), SHARED)
    assert (heard.form, heard.counter) == ("carp", None)


@given(st.binary(max_size=64))
def test_any_bytes_decode_or_drop(data):
    try:
        open_sealed(data, advert_key(SECRET), PARTNER, SHARED)
    except DropError:
        pass


def test_the_counter_must_rise_per_path():
    guard = ReplayGuard()
    assert guard.accept("eth0", 10) and guard.accept("eth1", 10)  # one round, every path
    assert not guard.accept("eth0", 10)  # the same advert again
    assert not guard.accept("eth0", 3)  # an older one
    assert guard.accept("eth0", 11)


def test_the_counter_rises_across_restarts_also_with_the_clock_set_back(tmp_path):
    first = AdvertCounter(tmp_path, clock=lambda: 2_000_000.0)
    sent = [first.next() for _ in range(5)]
    assert sent == sorted(sent) and sent[0] > 2_000_000 * 1_000_000
    assert (tmp_path / "advert-counter").stat().st_mode & 0o077 == 0
    # restarted with the clock an hour back: still above everything sent before
    again = AdvertCounter(tmp_path, clock=lambda: 2_000_000.0 - 3600)
    assert again.next() > sent[-1]
    # the state directory wiped (tmpfs after a reboot): the clock alone orders it
    later = AdvertCounter(tmp_path / "wiped", clock=lambda: 2_000_100.0)
    assert later.next() > sent[-1]


def test_a_new_reservation_is_stored_before_the_counter_reaches_it(tmp_path):
    c = AdvertCounter(tmp_path, clock=lambda: 1.0)
    c.value = c.limit - 1
    c.next()
    assert int((tmp_path / "advert-counter").read_text()) == c.value + RESERVE
