"""The sync protocol on TCP 6973, pure: framing, mutual authentication, and the merge plan.

Frames: 4-byte big-endian length, then the body (at most MAX_HANDSHAKE_FRAME bytes until the
handshake is done, MAX_FRAME after). Handshake (JSON bodies), with
K = HMAC-SHA256(secret, "carpool sync v1"), Rc/Rs the client's and the server's roles:
    client -> server  {"type": "hello", "proto": 2, "role": Rc, "nonce": Nc}
    server -> client  {"type": "challenge", "role": Rs, "nonce": Ns,
                       "proof": HMAC(K, "server"|Rc|Rs|Nc|Ns)}
    client -> server  {"type": "proof", "proof": HMAC(K, "client"|Rc|Rs|Nc|Ns)}
Each side proves it knows the secret without sending it; fresh nonces on both sides make an
old handshake useless, and both roles in the proofs (each side checks the other claims the
partner's role, never its own) make one unit's handshake useless against itself: a reflected
handshake fails. After it, every body is ChaCha20-Poly1305 (the `cryptography` library) under
S = HMAC(K, "session v2"|Rc|Rs|Nc|Ns), nonce = direction | seq, seq counting from 0 per
direction: secret (the document carries password hashes), and a frame replayed, reordered,
reflected, cut or forged fails and closes the connection.
Protocol 1 (the release before) had no roles in the proofs and HMAC-tagged plain frames; a
unit of that release is told why sync is down, never served in the weaker form.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from .. import untrusted

PROTO = 2
MAX_DOCUMENT = 8 * 1024 * 1024  # what an admin may write in one change (web/limits.py LARGE)
# a push carries the versions the partner lacks: after a long split, several whole documents
MAX_FRAME = 8 * MAX_DOCUMENT
MAX_HANDSHAKE_FRAME = 64 * 1024  # before authentication: a hello, a challenge, a proof
TAG = 16  # Poly1305
ROLES = ("first", "second")


class FrameError(Exception):
    """A malformed or unauthentic frame: the connection is closed and the reason counted."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def sync_key(secret: bytes) -> bytes:
    return hmac.new(secret, b"carpool sync v1", hashlib.sha256).digest()


@dataclass(frozen=True)
class Handshake:
    """Who is who in one handshake: the client's and the server's roles and nonces."""

    client_role: str
    server_role: str
    client_nonce: str
    server_nonce: str

    def _mac(self, key: bytes, label: str) -> bytes:
        text = f"{label}|{self.client_role}|{self.server_role}|"
        text += f"{self.client_nonce}|{self.server_nonce}"
        return hmac.new(key, text.encode(), hashlib.sha256).digest()

    def proof(self, key: bytes, who: str) -> str:
        """`who` ("client" or "server") proves it knows K for this handshake."""
        return self._mac(key, who).hex()

    def session_key(self, key: bytes) -> bytes:
        return self._mac(key, "session v2")


def partner_role(role: str) -> str:
    return "second" if role == "first" else "first"


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
    """Encrypts what we send and opens what we receive, after the handshake."""

    key: bytes
    we_are_client: bool
    sent: int = 0
    received: int = 0

    def __post_init__(self) -> None:
        self._aead = ChaCha20Poly1305(self.key)

    @staticmethod
    def _nonce(direction: bytes, seq: int) -> bytes:
        return direction + struct.pack("!Q", seq)  # 4 + 8 bytes: never twice under one key

    def seal(self, msg: dict[str, Any]) -> bytes:
        return self.seal_raw(dumps(msg))

    def seal_raw(self, data: bytes) -> bytes:
        """A frame of `data` as it is (tests send what no encoder would)."""
        direction = b"c>s\0" if self.we_are_client else b"s>c\0"
        body = self._aead.encrypt(self._nonce(direction, self.sent), data, None)
        self.sent += 1
        return frame(body)

    def open(self, body: bytes) -> dict[str, Any]:
        if len(body) < TAG:
            raise FrameError("truncated", f"{len(body)} bytes")
        direction = b"s>c\0" if self.we_are_client else b"c>s\0"
        try:
            data = self._aead.decrypt(self._nonce(direction, self.received), body, None)
        except InvalidTag:
            raise FrameError("bad_tag", f"frame {self.received}") from None
        self.received += 1
        return parse_json(data)


def open_welcome(session: Session, body: bytes) -> tuple[dict[str, Any], str | None]:
    """The server's answer to our proof: (the sealed welcome, None) or ({}, why it refused) —
    a refusal is unsealed JSON. Sealed is tried first: a sealed frame starts with ciphertext,
    which starts with "{" once in 256 (seen in CI: a welcome taken for a refusal)."""
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
