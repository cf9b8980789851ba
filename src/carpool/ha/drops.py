"""Typed drop reasons: every rejected packet names why, and the name is the counter shown in
status and /metrics. Decoders raise DropError and nothing else, so one `except DropError` in the
receive loop counts every drop."""

from __future__ import annotations

import enum


class DropReason(enum.Enum):
    """Why a packet was dropped; the value is the counter name."""

    TOO_SHORT = "too_short"
    BAD_IP_HEADER = "bad_ip_header"
    BAD_PROTOCOL = "bad_protocol"
    BAD_TTL = "bad_ttl"
    BAD_VERSION = "bad_version"
    BAD_TYPE = "bad_type"
    BAD_CHECKSUM = "bad_checksum"
    BAD_AUTHLEN = "bad_authlen"
    WRONG_VHID = "wrong_vhid"
    BAD_HMAC = "bad_hmac"
    OWN_PACKET = "own_packet"
    BAD_LENGTH = "bad_length"
    WRONG_ADDRESSES = "wrong_addresses"
    BAD_INTERVAL = "bad_interval"
    UNKNOWN_INTERFACE = "unknown_interface"
    NOT_PARTNER = "not_partner"  # an advert from anyone but the partner's address on that link
    REPLAYED = "replayed"  # a carpool advert whose counter did not rise
    DOWNGRADE = "downgrade"  # the older advert form from a partner that spoke the carpool form
    RATE_LIMITED = "rate_limited"  # a source other than the partner over its budget
    INTERNAL_ERROR = "internal_error"  # a bug met on this datagram: counted, logged, survived


class DropError(Exception):
    """The only exception a decoder may raise."""

    def __init__(self, reason: DropReason, detail: str = "") -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.detail = detail
