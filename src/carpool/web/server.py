"""The HTTPS server inside the daemon's event loop (uvicorn, no thread, no second process).

uvicorn's serve() installs its own SIGINT/SIGTERM handlers; those would replace the daemon's
(SIGTERM = bow out), so the subclass captures no signals. A WUI that cannot start is logged and
left out: the HA election never depends on it.

What a client may hold of the loop (issue 13), besides the body limits of web/limits.py:
- HTTP/1.1 by h11 always (`http=HeaderDeadline`; httptools, if installed, would ignore the
  header size limit), with request headers at most `MAX_HEADERS` bytes (h11's incomplete-event
  limit: more is answered 400) and complete within `HEADER_TIMEOUT` s of the connection (or of
  the previous response): a client that trickles its headers is disconnected;
- `timeout_keep_alive`: an idle kept-alive connection is closed after `KEEP_ALIVE` s;
- `limit_concurrency`: beyond `MAX_CONNECTIONS` open connections (or requests in progress) a
  request is answered 503 at once instead of being run;
- `proxy_headers` off and no forwarded_allow_ips: X-Forwarded-For/-Proto are never trusted, so
  the client address (login limiter, event log) is always the TCP peer's.
Not covered here: a TLS handshake is bounded only by asyncio's default (60 s), and connections
in their handshake do not count toward `MAX_CONNECTIONS` (uvicorn sees them after it)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from email.utils import formatdate
from pathlib import Path

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from .. import events
from ..tlscert import ensure_self_signed

log = events.logger("carpool.web", events.Kind.WEB)
MAX_CONNECTIONS = 64
KEEP_ALIVE = 5  # s an idle kept-alive connection stays open
MAX_HEADERS = 16 * 1024  # bytes of a request's line and headers
HEADER_TIMEOUT = 10.0  # s for a request's line and headers to arrive
_clock = time.time  # the Date header's (a test moves it)


class HeaderDeadline(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request's headers (uvicorn itself waits
    for them as long as bytes keep coming: its keep-alive timer stops at the first byte), and
    no reading on after a response sent before its request's body was read (uvicorn would read
    and drop the rest, however long it is)."""

    header_timeout = HEADER_TIMEOUT

    def connection_made(self, transport) -> None:
        self._deadline: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        # before uvicorn builds this request's response headers
        _date(self.server_state, self.config.encoded_headers)
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the headers are in (or it failed)
            self._disarm()
        elif self._deadline is None:  # between requests: the next one's headers are due
            self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.transport.is_closing():
            return
        if self.conn.their_state is h11.SEND_BODY:  # answered before its body was read
            self.transport.close()
        elif self.conn.their_state is h11.IDLE:
            self._arm()  # waiting for the next request's headers

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.header_timeout, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def _date(state, headers: list[tuple[bytes, bytes]]) -> None:
    """The Date header of this second (formatted once a second at most). uvicorn's main loop
    refreshes it from a 0.1 s tick; an idle daemon should not turn its loop for that."""
    second = int(_clock())
    if getattr(state, "date_second", None) != second:
        state.date_second = second
        state.default_headers = [(b"date", formatdate(second, usegmt=True).encode()), *headers]


class EmbeddedServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config):
        super().__init__(config)
        self.exit = asyncio.Event()

    async def main_loop(self) -> None:
        # uvicorn's polls should_exit every 0.1 s; this one sleeps until stop() says so
        await self.on_tick(0)
        await self.exit.wait()

    @contextlib.contextmanager
    def capture_signals(self):  # the daemon owns the signals
        yield

    def install_signal_handlers(self) -> None:  # older uvicorn
        pass


def ensure_certificate(cert: str, key: str, address: str, common_name: str) -> None:
    if ensure_self_signed(Path(cert), Path(key), common_name, (address,)):
        log.info(
            "created a self-signed certificate %s (replace it with your own; it is "
            "never overwritten)",
            cert,
        )


class WebServer:
    def __init__(self, app, host: str, port: int, cert: str, key: str):
        self.host, self.port = host, port
        self.config = uvicorn.Config(
            app,
            host=host,
            port=port,
            ssl_certfile=cert,
            ssl_keyfile=key,
            log_config=None,
            lifespan="off",
            access_log=False,
            server_header=False,
            http=HeaderDeadline,
            h11_max_incomplete_event_size=MAX_HEADERS,
            timeout_keep_alive=KEEP_ALIVE,
            limit_concurrency=MAX_CONNECTIONS,
            proxy_headers=False,
            forwarded_allow_ips=[],
            # uvicorn annotates int, but uses it as an asyncio.timeout(): seconds, a float works
            timeout_graceful_shutdown=0.5,  # type: ignore[arg-type]
        )
        self.server = EmbeddedServer(self.config)
        self.task: asyncio.Task | None = None

    async def start(self) -> bool:
        """Start serving; False (logged) when the port cannot be bound."""
        self.task = asyncio.get_running_loop().create_task(self._serve())
        deadline = asyncio.get_running_loop().time() + 10
        while not self.server.started and not self.task.done():
            if asyncio.get_running_loop().time() > deadline:
                log.error("WUI on %s:%d did not start within 10 s", self.host, self.port)
                return False
            await asyncio.sleep(0.02)
        if self.task.done():
            error = self.task.exception() if not self.task.cancelled() else None
            log.error(
                "WUI cannot listen on https://%s:%d/: %s",
                self.host,
                self.port,
                error or "uvicorn stopped (see above)",
            )
            return False
        host = f"[{self.host}]" if ":" in self.host else self.host
        log.info("WUI listening on https://%s:%d/", host, self.port)
        return True

    async def _serve(self) -> None:
        # uvicorn calls sys.exit() when it cannot bind; SystemExit leaving a task would end the
        # daemon's event loop, so it becomes an ordinary error here.
        try:
            await self.server.serve()
        except SystemExit as e:
            raise OSError(
                f"cannot listen on {self.host}:{self.port} (uvicorn exit {e.code})"
            ) from None

    async def stop(self) -> None:
        if self.task is None or self.task.done():
            return
        self.server.should_exit = True
        self.server.exit.set()
        try:
            await asyncio.wait_for(asyncio.shield(self.task), 3)
        except (TimeoutError, Exception):
            self.task.cancel()
