"""Doctor probes: packets that travel exactly like adverts (IP protocol 112, TTL 255, to the
advert destination of the interface) so they meet the same filters, but that no election ever
takes for an advert.

    payload = MAGIC (8) | JSON body | HMAC-SHA256 (32) over MAGIC + body

The magic's first byte reads as CARP/VRRP version 4, which BSD CARP, ucarp and keepalived drop,
and carpool's receive path sorts probes out before the advert decoder. A probe whose HMAC fails
is still returned (with `authentic` False): the network delivered it, and a wrong secret is
the doctor's own finding. Pure: bytes in, values out.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

from .. import untrusted

MAGIC = b"CPDOCTOR"
MAC_LEN = 32
MAX_BODY = 1200  # one probe always fits an unfragmented frame
MAX_DEPTH = 16  # a report nests 3 deep; anything deeper is refused before parsing


class ProbeError(ValueError):
    pass


@dataclass(frozen=True)
class Probe:
    body: dict[str, Any]
    authentic: bool


def is_probe(payload: bytes) -> bool:
    return payload[: len(MAGIC)] == MAGIC


def probe_key(secret: bytes) -> bytes:
    return hashlib.sha256(b"carpool doctor probe\0" + secret).digest()


def encode(key: bytes, body: dict[str, Any]) -> bytes:
    data = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
    if len(data) > MAX_BODY:
        raise ProbeError(f"probe body of {len(data)} bytes exceeds {MAX_BODY}")
    signed = MAGIC + data
    return signed + hmac.new(key, signed, hashlib.sha256).digest()


def decode(key: bytes, payload: bytes) -> Probe:
    """The probe in `payload`; ProbeError, and nothing else, for any other bytes (too deep,
    too long a number, not an object...: carpool.untrusted)."""
    if not is_probe(payload):
        raise ProbeError("not a doctor probe")
    if len(payload) < len(MAGIC) + 2 + MAC_LEN or len(payload) > len(MAGIC) + MAX_BODY + MAC_LEN:
        raise ProbeError(f"probe of {len(payload)} bytes")
    signed, mac = payload[:-MAC_LEN], payload[-MAC_LEN:]
    try:
        body = untrusted.loads_object(signed[len(MAGIC) :], max_size=MAX_BODY, max_depth=MAX_DEPTH)
    except untrusted.UntrustedJSON as e:
        raise ProbeError(f"probe body: {e}") from None
    authentic = hmac.compare_digest(hmac.new(key, signed, hashlib.sha256).digest(), mac)
    return Probe(body, authentic)
