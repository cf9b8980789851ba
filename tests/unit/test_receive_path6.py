"""The advert path over IPv6: one election across families. A dual-stack link's IPv6 adverts
count for the partner as its IPv4 ones do, from its configured IPv6 address (carpool and CARP
forms) or a link-local one (VRRPv3, RFC 9568); the counter rule keeps a path per family; the
hop limit must be 255; a stranger's source is a not_partner drop."""

from __future__ import annotations

import itertools
from ipaddress import IPv4Address, IPv6Address, ip_address

from carpool.config.ha import parse_config
from carpool.ha import ipv6
from carpool.ha.ipv4 import Ipv4Packet
from carpool.ha.ipv6 import Ipv6Packet
from carpool.node.advert import AdvertPaths, make_profile

OWN6, PARTNER6 = IPv6Address("2001:2::11"), IPv6Address("2001:2::12")
PARTNER = IPv4Address("198.18.0.12")
PARTNER_LL = IPv6Address("fe80::12")
SHARED = [ip_address("198.18.0.10"), ip_address("2001:2::10")]
COUNTER = itertools.count(1)


def config(**ha):
    return parse_config(
        {
            "unit": {"role": "first", "secret": "unit-test-secret"},
            "ha": ha,
            "interface": [
                {
                    "name": "eth0",
                    "first": ["198.18.0.11", str(OWN6)],
                    "second": [str(PARTNER), str(PARTNER6)],
                    "shared": ["198.18.0.10/24", "2001:2::10/64"],
                }
            ],
        }
    )


class Queue:
    def __init__(self, *items):
        self.queue = list(items)

    def recv_all(self):
        out, self.queue = self.queue, []
        return out

    def close(self):
        pass


class Receiver:
    def __init__(self, cfg):
        self.cfg, self.profile = cfg, make_profile(cfg)
        self.ranks: list = []
        self.paths = AdvertPaths(
            cfg,
            {},
            on_advert=lambda rank, bow_out, name: self.ranks.append((rank.address, name)),
            on_probe=lambda *a: None,
            on_foreign=lambda *a: None,
            clock=lambda: 1000.0,
        )

    def advert6(self, src=PARTNER6, hops=255, counter=None, mac_source=None, addresses=SHARED):
        counter = next(COUNTER) if counter is None else counter
        payload = self.profile.encode(False, 0, counter, addresses, mac_source or src, ipv6.GROUP)
        return Ipv6Packet(src, ipv6.GROUP, hops, 112, payload)

    def feed6(self, *packets):
        self.paths.sockets6["eth0"] = Queue(*packets)  # type: ignore[assignment]
        self.paths.on_readable6("eth0")

    def feed4(self, *datagrams):
        self.paths.sockets["eth0"] = Queue(*datagrams)  # type: ignore[assignment]
        self.paths.on_readable("eth0")

    @property
    def drops(self):
        return {r.value: n for r, n in self.paths.counters.drops.items()}


def test_a_sealed_ipv6_advert_from_the_partner_ranks_as_the_partner():
    r = Receiver(config())
    r.feed6(r.advert6())
    assert r.ranks == [(int(PARTNER), "eth0")]  # its identity: the primary IPv4 address
    assert r.drops == {}


def test_one_round_in_both_families_passes_the_counter_rule_a_copy_does_not():
    r = Receiver(config())
    counter = next(COUNTER)
    v4 = Ipv4Packet(
        PARTNER,
        IPv4Address("224.0.0.18"),
        255,
        112,
        r.profile.encode(False, 0, counter, SHARED, PARTNER, IPv4Address("224.0.0.18")),
    ).pack()
    r.feed4(v4)
    r.feed6(r.advert6(counter=counter))
    # taken (not a replay): the election had the round from IPv4, the path has it as a sign
    assert len(r.ranks) == 1 and r.paths.counters.again == 1 and not r.drops
    assert r.paths.paths["eth0"].adverts_heard == 2
    r.feed6(r.advert6(counter=counter))
    assert r.drops == {"replayed": 1}


def test_hop_limit_below_255_and_strangers_are_dropped():
    r = Receiver(config())
    r.feed6(r.advert6(hops=254), r.advert6(src=IPv6Address("2001:2::99")))
    assert r.ranks == []
    assert r.drops == {"bad_ttl": 1, "not_partner": 1}


def test_the_mac_covers_the_ipv6_source_and_every_shared_address():
    r = Receiver(config())
    r.feed6(
        r.advert6(mac_source=PARTNER),  # an IPv4 advert's MAC under an IPv6 source
        r.advert6(addresses=SHARED[:1]),  # without the IPv6 shared address
    )
    assert r.ranks == []
    assert r.drops == {"bad_hmac": 2}


def test_vrrp3_over_ipv6_comes_from_a_link_local_and_carries_ipv6_addresses_only():
    r = Receiver(config(protocol="vrrp3"))
    r.feed6(r.advert6(src=PARTNER_LL))
    assert r.ranks == [(int(PARTNER), "eth0")]
    advert = r.advert6(src=PARTNER_LL)
    assert len(advert.payload) == 8 + 16  # one IPv6 address: the IPv4 one is not carried
    wrong = r.profile.encode(False, 0, 0, [ip_address("2001:2::77")], PARTNER_LL, ipv6.GROUP)
    r.feed6(Ipv6Packet(PARTNER_LL, ipv6.GROUP, 255, 112, wrong))
    assert r.drops == {"wrong_addresses": 1}
    r.feed6(r.advert6(src=IPv6Address("2001:2::99")))  # a global stranger is still none of ours
    assert r.drops == {"wrong_addresses": 1, "not_partner": 1}


def test_an_older_round_heard_late_on_another_path_keeps_the_path_but_moves_nothing():
    """A stalled loop reads each socket's backlog in turn: the partner's adverts and then its
    bow-out on one path, then the same older adverts on the next. Those are an older round
    (a lower counter than one already heard): they prove their path alive, but the election
    does not hear them again — else it flips back and forth once per path."""
    r = Receiver(config())
    calls: list = []
    r.paths.on_advert = lambda rank, bow_out, name: calls.append((bow_out, name))
    older, newer = next(COUNTER), next(COUNTER)
    bow_out = r.profile.encode(True, 0, newer, SHARED, PARTNER6, ipv6.GROUP)
    r.feed6(r.advert6(counter=older), Ipv6Packet(PARTNER6, ipv6.GROUP, 255, 112, bow_out))
    v4 = Ipv4Packet(
        PARTNER,
        IPv4Address("224.0.0.18"),
        255,
        112,
        r.profile.encode(False, 0, older, SHARED, PARTNER, IPv4Address("224.0.0.18")),
    ).pack()
    before = r.paths.paths["eth0"].adverts_heard
    r.feed4(v4)  # the same older round, read late from the IPv4 socket
    assert calls == [(False, "eth0"), (True, "eth0")]  # not heard again by the election
    assert r.paths.paths["eth0"].adverts_heard == before + 1  # but the path is alive
    assert r.paths.counters.stale == 1
