"""The partner unit's status for the dashboard, fetched from the partner's WUI port.

The request carries a token made with the partner secret (never synced, known to both units), so
no user password is needed between the units. Cached for a second: many open browsers cost the
partner one request per second at most."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import httpx

from .. import events, untrusted
from .auth import peer_token

log = events.logger("carpool.web", events.Kind.WEB)
logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is journal noise
PEER_HEADER = "X-Carpool-Peer"
MAX_STATUS = 16 * 1024 * 1024  # a status lists every real server: generous, but bounded


class PartnerView:
    def __init__(
        self, url: Callable[[], str], secret: bytes, max_age: float = 1.0, timeout: float = 1.5
    ):
        self._url, self.secret = url, secret
        self.max_age, self.timeout = max_age, timeout
        self._cached: dict | None = None
        self._at = 0.0
        self._lock = asyncio.Lock()
        self._client: httpx.AsyncClient | None = None

    @property
    def url(self) -> str:
        return self._url()  # follows configuration changes (interfaces, [web] partner_url)

    async def get(self) -> dict:
        """{"url", "status" (None if unknown), "error", "age"}."""
        async with self._lock:  # concurrent viewers share one request
            # a silent partner is asked less often: each try may cost the whole timeout
            max_age = (
                self.max_age if self._cached is None or self._cached["status"] else 3 * self.max_age
            )
            if self._cached is None or time.monotonic() - self._at > max_age:
                self._cached = await self._fetch()
                self._at = time.monotonic()
            return {**self._cached, "age": round(time.monotonic() - self._at, 3)}

    async def _fetch(self) -> dict:
        if self._client is None:
            # The partner's certificate is self-signed; the peer token authenticates us, and the
            # answer is shown, never acted upon.
            self._client = httpx.AsyncClient(verify=False, timeout=self.timeout)
        try:
            r = await self._client.get(
                self.url + "api/v1/peer/status", headers={PEER_HEADER: peer_token(self.secret)}
            )
            if r.status_code != 200:
                return {
                    "url": self.url,
                    "status": None,
                    "error": f"partner WUI answered {r.status_code}",
                }
            try:
                status = untrusted.loads_object(r.content, max_size=MAX_STATUS)
            except untrusted.UntrustedJSON as e:
                return {"url": self.url, "status": None, "error": f"partner WUI answered {e}"}
            return {"url": self.url, "status": status, "error": None}
        except (httpx.HTTPError, ValueError, OSError) as e:
            return {
                "url": self.url,
                "status": None,
                "error": f"partner WUI {self.url} unreachable: {type(e).__name__} {e}",
            }

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
