"""The sync protocol on TCP 6973, pure: framing, mutual authentication, and the merge plan.

Frames: 4-byte big-endian length, then the body (at most MAX_FRAME bytes).
Handshake (JSON bodies), with K = HMAC-SHA256(secret, "carpool sync v1"):
    client -> server  {"type": "hello", "proto": 1, "role": R, "nonce": Nc}
    server -> client  {"type": "challenge", "role": R, "nonce": Ns, "proof": HMAC(K, "server"|Nc|Ns)}
    client -> server  {"type": "proof", "proof": HMAC(K, "client"|Nc|Ns)}
Each side proves it knows the secret without sending it; fresh nonces on both sides make an
old handshake useless. After it, every body is TAG(32) | JSON with
TAG = HMAC(S, direction | seq | JSON), S = HMAC(K, "session"|Nc|Ns), seq counting from 0 per
direction: a frame replayed, reordered, cut or forged fails the tag and closes the connection.
(Integrity and authenticity, not secrecy: the document holds password hashes, never secrets.)
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
from dataclasses import dataclass, field
from typing import Any

from .. import untrusted

PROTO = 1
MAX_FRAME = 64 * 1024 * 1024
MAX_HANDSHAKE_FRAME = 64 * 1024  # before authentication: a hello, a challenge, a proof
TAG = 32


class FrameError(Exception):
    """A malformed or unauthentic frame: the connection is closed and the reason counted."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def sync_key(secret: bytes) -> bytes:
    return hmac.new(secret, b"carpool sync v1", hashlib.sha256).digest()


def proof(key: bytes, who: str, client_nonce: str, server_nonce: str) -> str:
    return hmac.new(
        key, f"{who}|{client_nonce}|{server_nonce}".encode(), hashlib.sha256
    ).hexdigest()


def session_key(key: bytes, client_nonce: str, server_nonce: str) -> bytes:
    return hmac.new(key, f"session|{client_nonce}|{server_nonce}".encode(), hashlib.sha256).digest()


def frame(body: bytes) -> bytes:
    if len(body) > MAX_FRAME:
        raise ValueError(f"frame of {len(body)} bytes exceeds {MAX_FRAME}")
    return struct.pack("!I", len(body)) + body


class Deframer:
    """Feed bytes, get whole frame bodies; FrameError on an oversized length."""

    def __init__(self, limit: int = MAX_FRAME):
        self.limit = limit
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out = []
        while len(self._buf) >= 4:
            (n,) = struct.unpack_from("!I", self._buf)
            if n > self.limit:
                raise FrameError("oversized", f"frame length {n} > {self.limit}")
            if len(self._buf) < 4 + n:
                break
            out.append(bytes(self._buf[4 : 4 + n]))
            del self._buf[: 4 + n]
        return out


# what carpool.untrusted calls a refusal -> the FrameError reason (the counter's name)
_REASONS = {"too_deep": "too_deep", "too_large": "oversized"}


def parse_json(body: bytes) -> dict[str, Any]:
    """A message from a frame body; FrameError, and nothing else, for any other bytes (nesting
    deeper than untrusted.MAX_DEPTH, a number too long, not an object with a "type"...)."""
    try:
        msg = untrusted.loads_object(body, max_size=MAX_FRAME)
    except untrusted.UntrustedJSON as e:
        reason = _REASONS.get(e.reason, "garbage")
        raise FrameError(reason, (e.detail if reason == e.reason else str(e))[:100]) from None
    if not isinstance(msg.get("type"), str):
        raise FrameError("garbage", "not a message object")
    return msg


def dumps(msg: dict[str, Any]) -> bytes:
    return json.dumps(msg, separators=(",", ":")).encode()


@dataclass
class Session:
    """Signs what we send and checks what we receive, after the handshake."""

    key: bytes
    we_are_client: bool
    sent: int = 0
    received: int = 0

    def _tag(self, direction: bytes, seq: int, data: bytes) -> bytes:
        return hmac.new(
            self.key, direction + struct.pack("!Q", seq) + data, hashlib.sha256
        ).digest()

    def seal(self, msg: dict[str, Any]) -> bytes:
        data = dumps(msg)
        direction = b"c>s" if self.we_are_client else b"s>c"
        tag = self._tag(direction, self.sent, data)
        self.sent += 1
        return frame(tag + data)

    def open(self, body: bytes) -> dict[str, Any]:
        if len(body) < TAG:
            raise FrameError("truncated", f"{len(body)} bytes")
        direction = b"s>c" if self.we_are_client else b"c>s"
        if not hmac.compare_digest(body[:TAG], self._tag(direction, self.received, body[TAG:])):
            raise FrameError("bad_tag", f"frame {self.received}")
        self.received += 1
        return parse_json(body[TAG:])


def open_welcome(session: Session, body: bytes) -> tuple[dict[str, Any], str | None]:
    """The server's answer to our proof: (the sealed welcome, None) or ({}, why it refused) —
    a refusal is unsealed JSON. Sealed is tried first: a sealed frame starts with its tag,
    and a tag starts with "{" once in 256 (seen in CI: a welcome taken for a refusal)."""
    try:
        return session.open(body), None
    except FrameError:
        if not body.startswith(b"{"):
            raise
    return {}, str(parse_json(body).get("error"))


# -- the merge plan -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    """What the active unit does after comparing histories (keys are (version, hash))."""

    action: str  # in_sync | push | pull | resolve
    push: tuple[tuple[int, str], ...] = ()  # our versions the partner lacks, oldest first
    pull: tuple[tuple[int, str], ...] = ()  # partner versions we lack
    ours_lost: tuple[tuple[int, str], ...] = ()  # ours to keep as conflict
    theirs_lost: tuple[tuple[int, str], ...] = ()
    winner: str = ""  # resolve: whose document wins
    notes: list[str] = field(default_factory=list, compare=False)


def plan(
    ours: list[tuple[int, str]], theirs: list[tuple[int, str]], our_role: str, preferred: str
) -> Plan:
    """ours/theirs: kept (version, hash) keys, oldest first, last = current.

    Only one side moved since the newest version both have: that side's newer versions go to
    the other (the higher version wins). Both moved: the preferred unit's side wins (the first
    unit's when none is preferred); the other side's newer versions are kept as conflicts."""
    if ours and theirs and ours[-1] == theirs[-1]:
        return Plan("in_sync")
    common = set(ours) & set(theirs)
    base = max((k for k in common), default=(0, ""))
    ours_new = tuple(k for k in ours if k[0] > base[0] and k not in common)
    theirs_new = tuple(k for k in theirs if k[0] > base[0] and k not in common)
    if not theirs_new:
        return Plan("push", push=ours_new) if ours_new else Plan("in_sync")
    if not ours_new:
        return Plan("pull", pull=theirs_new)
    winner = preferred if preferred in ("first", "second") else "first"
    partner = "second" if our_role == "first" else "first"
    if winner == our_role:
        return Plan("resolve", push=ours_new, theirs_lost=theirs_new, winner=our_role)
    return Plan("resolve", pull=theirs_new, ours_lost=ours_new, winner=partner)
