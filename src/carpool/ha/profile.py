"""Protocol profiles: turn election effects into advert bytes and received adverts into Ranks.

Pure: ha/classify.py hands in the parsed IPv4 packet (protocol, TTL and own source already
checked there) and gets back a Heard or a DropError whose reason it counts. Checks run cheap →
costly.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address

from .carp import BOW_OUT, CarpAdvert, carp_hmac
from .drops import DropError, DropReason
from .election import Params, Rank
from .ipv4 import Ipv4Packet
from .vrrp import VrrpAdvert


@dataclass(frozen=True)
class Heard:
    rank: Rank
    bow_out: bool
    source: IPv4Address


@dataclass(frozen=True)
class CarpProfile:
    """BSD CARP / ucarp: advbase seconds + advskew/256, HMAC-SHA1 keyed by the secret."""

    key: bytes
    vhid: int
    advbase: int
    advskew: int

    def params(self, address: IPv4Address, preempt: bool, initial_wait: float) -> Params:
        skew = self.advskew / 256
        return Params(
            rank_preference=self.advbase * 256 + self.advskew,
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
        addresses: Iterable[IPv4Address],
        source: IPv4Address,
        dst: IPv4Address,
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

    def decode(self, pkt: Ipv4Packet, addresses: Iterable[IPv4Address]) -> Heard:
        advert = CarpAdvert.unpack(pkt.payload)
        if advert.vhid != self.vhid:
            raise DropError(DropReason.WRONG_VHID, f"vhid {advert.vhid} from {pkt.src}")
        if not advert.verify(self.key, list(addresses)):
            raise DropError(DropReason.BAD_HMAC, f"from {pkt.src} (wrong secret or addresses)")
        bow_out = (advert.advbase, advert.advskew) == BOW_OUT
        rank = Rank(advert.demote, advert.advbase * 256 + advert.advskew, int(pkt.src))
        return Heard(rank, bow_out, pkt.src)


@dataclass(frozen=True)
class VrrpProfile:
    """VRRPv3 (keepalived compatible): centisecond intervals, priority, priority 0 = resign.

    VRRP has no demote field: a demoted unit advertises priority 1, the least preferred there is.
    """

    vrid: int
    priority: int
    interval_cs: int

    def params(self, address: IPv4Address, preempt: bool, initial_wait: float) -> Params:
        interval = self.interval_cs / 100
        skew = (256 - self.priority) * interval / 256
        return Params(
            rank_preference=255 - self.priority,
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
        addresses: Iterable[IPv4Address],
        source: IPv4Address,
        dst: IPv4Address,
    ) -> bytes:
        priority = 0 if bow_out else (1 if demote else self.priority)
        advert = VrrpAdvert(
            version=3,
            vrid=self.vrid,
            priority=priority,
            interval=self.interval_cs,
            addresses=tuple(addresses),
        )
        return advert.pack(source, dst)

    def decode(self, pkt: Ipv4Packet, addresses: Iterable[IPv4Address]) -> Heard:
        advert = VrrpAdvert.unpack(pkt.payload, pkt.src, pkt.dst)
        if advert.version != 3:
            raise DropError(DropReason.BAD_VERSION, f"VRRP version {advert.version}")
        if advert.vrid != self.vrid:
            raise DropError(DropReason.WRONG_VHID, f"vrid {advert.vrid} from {pkt.src}")
        if set(advert.addresses) != set(addresses):
            raise DropError(DropReason.WRONG_ADDRESSES, f"{pkt.src} advertises other addresses")
        rank = Rank(1 if advert.priority == 1 else 0, 255 - advert.priority, int(pkt.src))
        return Heard(rank, advert.priority == 0, pkt.src)
