"""Who may use the WUI and the API: argon2 password hashes (the users live in the synced document),
browser sessions with a CSRF token, HTTP Basic for scripts, and a limit on failed logins.

Pure parts only (no FastAPI here), so they are tested without a server."""

from __future__ import annotations

import base64
import binascii
import collections
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from argon2.low_level import Type, hash_secret

_hasher = PasswordHasher()
# Verifying against this when the user does not exist costs the same time as a real check.
_DUMMY = _hasher.hash("no such user")


def hash_password(password: str) -> str:
    if not password:
        raise ValueError("the password must not be empty")
    return _hasher.hash(password)


def fixed_salt_hash(password: str, salt: bytes) -> str:
    """A reproducible argon2id hash (same text every time): for the lab's published password
    only, so the document written by each run stays the same."""
    p = _hasher
    return hash_secret(
        password.encode(),
        salt,
        time_cost=p.time_cost,
        memory_cost=p.memory_cost,
        parallelism=p.parallelism,
        hash_len=p.hash_len,
        type=Type.ID,
    ).decode()


def verify_password(users: dict[str, str], name: str, password: str) -> bool:
    """users: name -> argon2 hash. False for an unknown user or a wrong password."""
    stored = users.get(name)
    try:
        return _hasher.verify(stored or _DUMMY, password) and stored is not None
    except (VerificationError, InvalidHashError):
        return False


def parse_basic(header: str | None) -> tuple[str, str] | None:
    """(user, password) from an `Authorization: Basic ...` header, None if absent or malformed."""
    if not header or header[:6].lower() != "basic ":
        return None
    try:
        user, sep, password = (
            base64.b64decode(header[6:].strip(), validate=True).decode("utf-8").partition(":")
        )
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


@dataclass
class Session:
    user: str
    csrf: str
    expires: float
    password_hash: str = ""  # the user's hash at login: a changed password ends the session


@dataclass
class Sessions:
    """Browser sessions, in memory: a restart of the daemon logs everyone out."""

    lifetime: float = 8 * 3600
    clock: Callable[[], float] = time.monotonic
    _by_token: dict[str, Session] = field(default_factory=dict)

    def create(self, user: str, password_hash: str = "") -> tuple[str, Session]:
        self._expire()
        token = secrets.token_urlsafe(32)
        session = self._by_token[token] = Session(
            user, secrets.token_urlsafe(32), self.clock() + self.lifetime, password_hash
        )
        return token, session

    def get(self, token: str | None) -> Session | None:
        session = self._by_token.get(token or "")
        if session is None or session.expires < self.clock():
            self._by_token.pop(token or "", None)
            return None
        return session

    def drop(self, token: str | None) -> None:
        self._by_token.pop(token or "", None)

    def drop_user(self, name: str) -> None:
        """A removed user (or a changed password) ends that user's sessions."""
        for token in [t for t, s in self._by_token.items() if s.user == name]:
            del self._by_token[token]

    def _expire(self) -> None:
        now = self.clock()
        for token in [t for t, s in self._by_token.items() if s.expires < now]:
            del self._by_token[token]


def csrf_ok(session: Session, token: str | None) -> bool:
    if not token:
        return False
    return hmac.compare_digest(session.csrf, token)


class Blocked(Exception):
    """This address has no login attempt left for `retry_after` seconds."""

    def __init__(self, retry_after: float):
        super().__init__(f"too many failed logins; try again in {int(retry_after) + 1} s")
        self.retry_after = retry_after


@dataclass
class LoginLimiter:
    """At most `failures` failed logins per source address within `window` seconds; then that
    address is refused until the oldest failure ages out. A success does not reset the count
    (it would let a guesser who knows one password go on guessing others).

    An attempt is reserved before its password is hashed (`reserve`) and counts as a failure
    until it is known to be one or not (`done`): concurrent guesses from one address can never
    have more than `failures` passwords checked."""

    failures: int = 5
    window: float = 60.0
    clock: Callable[[], float] = time.monotonic
    _seen: dict[str, collections.deque] = field(default_factory=dict)
    _pending: dict[str, int] = field(default_factory=dict)

    def _recent(self, source: str) -> collections.deque:
        now = self.clock()
        seen = self._seen.setdefault(source, collections.deque())
        while seen and seen[0] <= now - self.window:
            seen.popleft()
        if not seen:
            self._seen.pop(source, None)
        return seen

    def retry_after(self, source: str) -> float:
        """0 if `source` is not refused now (its attempts may all be in flight, though), else
        seconds until it may try again."""
        seen = self._recent(source)
        if len(seen) < self.failures:
            return 0.0
        return max(0.0, seen[0] + self.window - self.clock())

    def reserve(self, source: str) -> bool:
        """One attempt for `source`, counted now; False when its failures and the attempts
        in flight use up the limit (wait for those, or see retry_after)."""
        if len(self._recent(source)) + self._pending.get(source, 0) >= self.failures:
            return False
        self._pending[source] = self._pending.get(source, 0) + 1
        return True

    def done(self, source: str, ok: bool) -> None:
        """A reserved attempt's outcome: a success gives the attempt back, a failure stays."""
        left = self._pending.get(source, 0) - 1
        if left > 0:
            self._pending[source] = left
        else:
            self._pending.pop(source, None)
        if not ok:
            self.failed(source)

    def failed(self, source: str) -> None:
        self._recent(source)
        self._seen.setdefault(source, collections.deque()).append(self.clock())
        if len(self._seen) > 10000:  # bounded memory under a spray from many addresses
            oldest = min(self._seen, key=lambda s: self._seen[s][-1])
            del self._seen[oldest]


def peer_token(secret: bytes, now: float | None = None) -> str:
    """The header one unit sends to the other's /api/v1/peer/status: a timestamp and its HMAC
    with the partner secret (never synced, known to both units)."""
    stamp = str(int(time.time() if now is None else now))
    mac = hmac.new(secret, b"carpool-peer:" + stamp.encode(), "sha256").hexdigest()
    return f"{stamp}:{mac}"


def peer_token_ok(
    secret: bytes, token: str | None, now: float | None = None, skew: float = 60.0
) -> bool:
    stamp, _, mac = (token or "").partition(":")
    if not stamp.isdigit():
        return False
    now = time.time() if now is None else now
    if abs(now - int(stamp)) > skew:
        return False
    want = hmac.new(secret, b"carpool-peer:" + stamp.encode(), "sha256").hexdigest()
    return hmac.compare_digest(want, mac)
