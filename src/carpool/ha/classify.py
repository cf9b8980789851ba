"""What one received protocol-112 datagram is: an advert, a doctor probe, or a drop with its
reason. Pure and total: bytes in, a verdict out, never an exception.

The IPv4 header is parsed here and only here; a raw IPv6 socket hands over no header, so IPv6
datagrams come in as ha.ipv6.Ipv6Packet (classify_packet) and meet the same checks. Our own adverts never get here: the socket drops
them (node/rawsock.py: the kernel loops broadcasts back to the sender), counted as OWN_PACKET.
Only the partner's address on the interface it arrived on may speak to the election: anything
else is a NOT_PARTNER drop, and one for our VHID is marked `foreign` (the doctor and status note
the speaker). Doctor probes come from anyone: the doctor judges them.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Protocol

from . import probe
from .drops import DropError, DropReason
from .ipv4 import PROTO_CARP, TTL, Ipv4Packet, parse_ipv4
from .ipv6 import Ipv6Packet
from .profile import Heard

Address = IPv4Address | IPv6Address
Packet = Ipv4Packet | Ipv6Packet


class Kind(enum.Enum):
    ADVERT = "advert"
    PROBE = "probe"
    DROP = "drop"


class Decoder(Protocol):
    def decode(self, pkt: Packet, addresses: Iterable[Address]) -> Heard: ...


@dataclass(frozen=True)
class Verdict:
    kind: Kind
    source: Address | None = None
    payload: bytes = b""
    heard: Heard | None = None  # ADVERT
    drop: DropError | None = None  # DROP
    foreign: bool = False  # speaks our VHID, but is not the partner

    @property
    def reason(self) -> DropReason | None:
        return None if self.drop is None else self.drop.reason


def classify(
    datagram: bytes,
    *,
    partner: IPv4Address | None,
    vhid: int,
    decoder: Decoder,
    addresses: Iterable[Address],
) -> Verdict:
    """Judge one IPv4 datagram as a raw socket hands it over (header included); `partner`: the
    partner's address on the interface it arrived on."""
    try:
        pkt = parse_ipv4(datagram)
    except DropError as e:
        return Verdict(Kind.DROP, drop=e)
    return classify_packet(pkt, partner=partner, vhid=vhid, decoder=decoder, addresses=addresses)


def classify_packet(
    pkt: Packet,
    *,
    partner: Address | None,
    vhid: int,
    decoder: Decoder,
    addresses: Iterable[Address],
    link_local_partner: bool = False,
) -> Verdict:
    """Judge one parsed datagram. `link_local_partner`: over IPv6, any link-local source on the
    link speaks for the partner (VRRPv3 sends from the link-local address, which the
    configuration does not name; that protocol authenticates nothing anyway)."""
    src, payload = pkt.src, pkt.payload
    if pkt.protocol != PROTO_CARP:
        return _drop(DropReason.BAD_PROTOCOL, f"protocol {pkt.protocol}", src)
    if probe.is_probe(payload):
        return Verdict(Kind.PROBE, src, payload)
    if src != partner and not (link_local_partner and src.version == 6 and src.is_link_local):
        foreign = payload[1:2] == bytes([vhid])
        return _drop(DropReason.NOT_PARTNER, f"from {src}", src, payload, foreign)
    if pkt.ttl != TTL:  # TTL 255 proves the sender is on this link (RFC 5798 §7.1, BSD CARP)
        return _drop(DropReason.BAD_TTL, f"ttl {pkt.ttl} from {src}", src, payload)
    try:
        heard = decoder.decode(pkt, addresses)
    except DropError as e:
        return Verdict(Kind.DROP, src, payload, drop=e)
    return Verdict(Kind.ADVERT, src, payload, heard=heard)


def _drop(
    reason: DropReason, detail: str, src: Address, payload: bytes = b"", foreign: bool = False
) -> Verdict:
    return Verdict(Kind.DROP, src, payload, drop=DropError(reason, detail), foreign=foreign)
