"""What one received protocol-112 datagram is: an advert, a doctor probe, or a drop with its
reason. Pure and total: bytes in, a verdict out, never an exception.

The IPv4 header is parsed here and only here. Our own adverts never get here: the socket drops
them (node/rawsock.py: the kernel loops broadcasts back to the sender), counted as OWN_PACKET.
Only the partner's address on the interface it arrived on may speak to the election: anything
else is a NOT_PARTNER drop, and one for our VHID is marked `foreign` (the doctor and status note
the speaker). Doctor probes come from anyone: the doctor judges them.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Protocol

from . import probe
from .drops import DropError, DropReason
from .ipv4 import PROTO_CARP, TTL, Ipv4Packet, parse_ipv4
from .profile import Heard


class Kind(enum.Enum):
    ADVERT = "advert"
    PROBE = "probe"
    DROP = "drop"


class Decoder(Protocol):
    def decode(self, pkt: Ipv4Packet, addresses: Iterable[IPv4Address]) -> Heard: ...


@dataclass(frozen=True)
class Verdict:
    kind: Kind
    source: IPv4Address | None = None
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
    partner: IPv4Address,
    vhid: int,
    decoder: Decoder,
    addresses: Iterable[IPv4Address],
) -> Verdict:
    """Judge one datagram as a raw socket hands it over (IPv4 header included); `partner`: the
    partner's address on the interface it arrived on."""
    try:
        pkt = parse_ipv4(datagram)
    except DropError as e:
        return Verdict(Kind.DROP, drop=e)
    src, payload = pkt.src, pkt.payload
    if pkt.protocol != PROTO_CARP:
        return _drop(DropReason.BAD_PROTOCOL, f"protocol {pkt.protocol}", src)
    if probe.is_probe(payload):
        return Verdict(Kind.PROBE, src, payload)
    if src != partner:
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
    reason: DropReason, detail: str, src: IPv4Address, payload: bytes = b"", foreign: bool = False
) -> Verdict:
    return Verdict(Kind.DROP, src, payload, drop=DropError(reason, detail), foreign=foreign)
