"""CARP over IPv6 (issue 14), the codec: the HMAC covers the sorted IPv4 then the sorted IPv6
shared addresses, link-local ones left out (what OpenBSD sends) or included with their scope
cleared (what OpenBSD also accepts); the checksum still covers the CARP header alone.

The expected digests here are built step by step the way OpenBSD's ip_carp.c does it (a 64-byte
pad of the 20-byte key XOR 0x36, SHA-1 over pad, version, type, vhid, each IPv4 address in
ascending order, each IPv6 address in ascending byte order, the counter; then SHA-1 over the
pad XOR 0x5c and that digest) — an implementation independent of carpool's `hmac` call. No
OpenBSD capture exists in this repository: these are built vectors, not captured ones."""

from __future__ import annotations

import hashlib
from ipaddress import IPv4Address, IPv6Address, ip_address

from carpool.ha.carp import CarpAdvert, carp_hmac
from carpool.ha.ipv4 import internet_checksum

KEY = b"secret"
V4 = [IPv4Address("198.18.0.10"), IPv4Address("198.18.2.1")]
V6 = [IPv6Address("2001:2::10"), IPv6Address("2001:2:0:2::1")]
LINK_LOCAL = IPv6Address("fe80::5:10")


def openbsd_digest(key: bytes, vhid: int, addresses, counter: int, link_local: bool) -> bytes:
    pad = bytearray(64)
    pad[: len(key[:20])] = key[:20]
    ipad = bytes(b ^ 0x36 for b in pad)
    opad = bytes(b ^ 0x5C for b in pad)
    inner = hashlib.sha1(ipad + bytes((2, 1, vhid)))
    v4 = sorted(a for a in addresses if a.version == 4)
    v6 = sorted(a for a in addresses if a.version == 6 and (link_local or not a.is_link_local))
    for a in [*v4, *v6]:
        inner.update(a.packed)
    inner.update(counter.to_bytes(8, "big"))
    return hashlib.sha1(opad + inner.digest()).digest()


def test_the_hmac_covers_ipv4_then_ipv6_sorted_without_link_local():
    shared = [V6[1], V4[1], LINK_LOCAL, V6[0], V4[0]]  # any order in
    want = openbsd_digest(KEY, 7, shared, 0x0102030405060708, link_local=False)
    assert carp_hmac(KEY, 7, shared, 0x0102030405060708) == want
    with_ll = openbsd_digest(KEY, 7, shared, 0x0102030405060708, link_local=True)
    # the built vectors, pinned: a change to either construction shows here
    assert want.hex() == "f5c2d6674a43457b88267d0ef5ecd7aec03df7b9"
    assert with_ll.hex() == "4cbcd8c3c908830b7ce859b1a4a45cc6d80f80c8"
    assert carp_hmac(KEY, 7, shared, 0x0102030405060708, link_local=True) == with_ll
    assert with_ll != want


def test_ipv4_only_is_unchanged():
    want = openbsd_digest(KEY, 10, V4, 99, link_local=False)
    assert carp_hmac(KEY, 10, V4, 99) == want


def test_a_scoped_address_hashes_as_its_bytes():
    scoped = ip_address("fe80::5:10%eth0")
    assert carp_hmac(KEY, 1, [*V6, scoped], 5, link_local=True) == carp_hmac(
        KEY, 1, [*V6, LINK_LOCAL], 5, link_local=True
    )


def test_verify_accepts_both_forms_openbsd_accepts():
    shared = [*V4, *V6, LINK_LOCAL]
    for link_local in (False, True):
        advert = CarpAdvert(
            vhid=3,
            advskew=0,
            advbase=1,
            counter=42,
            md=carp_hmac(KEY, 3, shared, 42, link_local=link_local),
        )
        assert advert.verify(KEY, shared)
        assert not advert.verify(b"another-key", shared)
    built = CarpAdvert.build(KEY, 3, 1, 0, 0, 42, shared)  # what we send: no link-local
    assert built.md == carp_hmac(KEY, 3, shared, 42, link_local=False)


def test_the_checksum_covers_the_carp_header_only_in_both_families():
    packed = CarpAdvert.build(KEY, 3, 1, 0, 0, 42, [*V4, *V6]).pack()
    assert len(packed) == 36 and internet_checksum(packed) == 0
    assert CarpAdvert.unpack(packed).verify(KEY, [*V6, *V4])
