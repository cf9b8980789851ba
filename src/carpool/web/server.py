"""The HTTPS server inside the daemon's event loop (uvicorn, no thread, no second process).

uvicorn's serve() installs its own SIGINT/SIGTERM handlers; those would replace the daemon's
(SIGTERM = bow out), so the subclass captures no signals. A WUI that cannot start is logged and
left out: the HA election never depends on it."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import uvicorn

from .. import events
from ..tlscert import ensure_self_signed

log = events.logger("carpool.web", events.Kind.WEB)


class EmbeddedServer(uvicorn.Server):
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
        log.info("WUI listening on https://%s:%d/", self.host, self.port)
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
        try:
            await asyncio.wait_for(asyncio.shield(self.task), 3)
        except (TimeoutError, Exception):
            self.task.cancel()
