"""Protocol profiles: turn election effects into advert bytes and received adverts into Ranks.

Pure: ha/classify.py hands in the parsed IPv4 packet (protocol, TTL and own source already
checked there) and gets back a Heard or a DropError whose reason it counts. Checks run cheap →
costly.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import ClassVar

from .carp import BOW_OUT, CarpAdvert, carp_hmac
from .drops import DropError, DropReason
from .election import Params, Rank
from .ipv4 import Ipv4Packet
from .ipv6 import Ipv6Packet
from .sealed import SealedAdvert, is_sealed, open_sealed
from .vrrp import VrrpAdvert

Address = IPv4Address | IPv6Address
Packet = Ipv4Packet | Ipv6Packet


@dataclass(frozen=True)
class Heard:
    rank: Rank
    bow_out: bool
    source: Address
    form: str = ""  # the advert's form: "carpool", "carp" or "vrrp3"
    counter: int | None = None  # a carpool advert's, for the replay rule (ha/replay.py)


def of_family(addresses: Iterable[Address], version: int) -> tuple[Address, ...]:
    """A VRRP advert carries the addresses of its own family only (RFC 9568 §5.2.9)."""
    return tuple(a for a in addresses if a.version == version)


@dataclass(frozen=True)
class CarpProfile:
    """BSD CARP / ucarp: advbase seconds + advskew/256, HMAC-SHA1 keyed by the secret."""

    key: bytes
    vhid: int
    advbase: int
    advskew: int
    form: ClassVar[str] = "carp"

    @property
    def preference(self) -> int:
        return self.advbase * 256 + self.advskew

    @property
    def interval_ms(self) -> int:
        return round((self.advbase + self.advskew / 256) * 1000)

    def params(self, address: Address, preempt: bool, initial_wait: float) -> Params:
        skew = self.advskew / 256
        return Params(
            rank_preference=self.preference,
            address=int(address),
            advert_interval=self.advbase + skew,
            # FreeBSD/ucarp: 3 × advbase + advskew/256 (faster than OpenBSD's 3 × interval).
            master_down=3 * self.advbase + skew,
            preempt=preempt,
            initial_wait=initial_wait,
        )

    def encode(
        self,
        bow_out: bool,
        demote: int,
        counter: int,
        addresses: Iterable[Address],
        source: Address,
        dst: Address,
    ) -> bytes:
        advbase, advskew = BOW_OUT if bow_out else (self.advbase, self.advskew)
        # pack() computes the checksum: once per advert (build() would pack twice)
        return CarpAdvert(
            vhid=self.vhid,
            advskew=advskew,
            demote=min(demote, 255),
            advbase=advbase,
            counter=counter,
            md=carp_hmac(self.key, self.vhid, addresses, counter),
        ).pack()

    def decode(self, pkt: Packet, addresses: Iterable[Address]) -> Heard:
        advert = CarpAdvert.unpack(pkt.payload)
        if advert.vhid != self.vhid:
            raise DropError(DropReason.WRONG_VHID, f"vhid {advert.vhid} from {pkt.src}")
        if not advert.verify(self.key, list(addresses)):
            raise DropError(DropReason.BAD_HMAC, f"from {pkt.src} (wrong secret or addresses)")
        bow_out = (advert.advbase, advert.advskew) == BOW_OUT
        rank = Rank(advert.demote, advert.advbase * 256 + advert.advskew, int(pkt.src))
        return Heard(rank, bow_out, pkt.src, self.form)


@dataclass(frozen=True)
class VrrpProfile:
    """VRRPv3 (keepalived compatible): centisecond intervals, priority, priority 0 = resign.

    VRRP has no demote field: a demoted unit advertises priority 1, the least preferred there is.
    """

    vrid: int
    priority: int
    interval_cs: int
    form: ClassVar[str] = "vrrp3"

    @property
    def preference(self) -> int:
        return 255 - self.priority

    @property
    def interval_ms(self) -> int:
        return self.interval_cs * 10

    def params(self, address: Address, preempt: bool, initial_wait: float) -> Params:
        interval = self.interval_cs / 100
        skew = (256 - self.priority) * interval / 256
        return Params(
            rank_preference=self.preference,
            address=int(address),
            advert_interval=interval,
            master_down=3 * interval + skew,
            preempt=preempt,
            initial_wait=initial_wait,
        )

    def encode(
        self,
        bow_out: bool,
        demote: int,
        counter: int,
        addresses: Iterable[Address],
        source: Address,
        dst: Address,
    ) -> bytes:
        priority = 0 if bow_out else (1 if demote else self.priority)
        advert = VrrpAdvert(
            version=3,
            vrid=self.vrid,
            priority=priority,
            interval=self.interval_cs,
            addresses=of_family(addresses, source.version),
        )
        return advert.pack(source, dst)

    def decode(self, pkt: Packet, addresses: Iterable[Address]) -> Heard:
        advert = VrrpAdvert.unpack(pkt.payload, pkt.src, pkt.dst)
        if advert.version != 3:
            raise DropError(DropReason.BAD_VERSION, f"VRRP version {advert.version}")
        if advert.vrid != self.vrid:
            raise DropError(DropReason.WRONG_VHID, f"vrid {advert.vrid} from {pkt.src}")
        if set(advert.addresses) != set(of_family(addresses, pkt.src.version)):
            raise DropError(DropReason.WRONG_ADDRESSES, f"{pkt.src} advertises other addresses")
        rank = Rank(1 if advert.priority == 1 else 0, 255 - advert.priority, int(pkt.src))
        return Heard(rank, advert.priority == 0, pkt.src, self.form)


@dataclass(frozen=True)
class SealedProfile:
    """`ha.auth = "carpool"`: the carpool advert (ha/sealed.py) carrying the base profile's rank
    and timers (CARP's advbase/advskew, or the fast profile's VRRP-style priority and
    centisecond interval). The base's own form is still understood, and `base` speaks it: a
    partner on an older release uses it (node/advert.py decides whether to accept it)."""

    base: CarpProfile | VrrpProfile
    key: bytes  # ha.sealed.advert_key(secret)
    vhid: int
    form: ClassVar[str] = "carpool"

    def params(self, address: Address, preempt: bool, initial_wait: float) -> Params:
        return self.base.params(address, preempt, initial_wait)

    def encode(
        self,
        bow_out: bool,
        demote: int,
        counter: int,
        addresses: Iterable[Address],
        source: Address,
        dst: Address,
    ) -> bytes:
        return SealedAdvert(
            vhid=self.vhid,
            bow_out=bow_out,
            demote=demote,
            preference=self.base.preference,
            interval_ms=self.base.interval_ms,
            counter=counter,
        ).seal(self.key, source, addresses)

    def decode(self, pkt: Packet, addresses: Iterable[Address]) -> Heard:
        if not is_sealed(pkt.payload):
            return self.base.decode(pkt, addresses)  # an older release's form
        advert = open_sealed(pkt.payload, self.key, pkt.src, addresses)
        if advert.vhid != self.vhid:
            raise DropError(DropReason.WRONG_VHID, f"vhid {advert.vhid} from {pkt.src}")
        rank = Rank(advert.demote, advert.preference, int(pkt.src))
        return Heard(rank, advert.bow_out, pkt.src, self.form, advert.counter)
