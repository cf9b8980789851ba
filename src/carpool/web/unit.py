"""The daemon's web side: started in the daemon's loop after the election is set up, stopped
after the bow-out. Nothing here can stop the election: every failure is logged and retried."""

from __future__ import annotations

import asyncio
from pathlib import Path

from .. import events
from .events import EventLog

log = events.logger("carpool.web", events.Kind.WEB)
RETRY = 10.0  # s between attempts to listen (the bind address may come up after the daemon)


class WebUnit:
    def __init__(self, unit):
        self.unit = unit  # node.view.UnitView
        cfg = unit.cfg  # the log file beside the configuration store: it outlives a restart
        store = Path(cfg.config_dir or cfg.state_dir)
        self.events = EventLog(2000, store / "events.jsonl", cfg.role)
        self.events.attach()  # from the start: the first transitions belong in the event log
        self.ctx = None
        self.app = None
        self.server = None
        self._prepared = None  # a WebServer built (and its uvicorn config loaded) before the loop

    def prepare(self) -> None:
        """Before the event loop runs: the web stack's imports (~0.6 s, seconds on a busy
        machine), the certificate (a key pair at first start) and the application. Done in
        the loop they would stall the election long enough for a fast profile's master-down
        and the supervisor's watchdog. Failures are left for run() to log and retry."""
        if not self.unit.cfg.web.enabled:
            return
        try:
            self._prepared = self._server()
            # uvicorn's load: its HTTP protocol imports and the TLS context (~1 s measured on
            # a busy machine), otherwise done in serve(), in the loop
            self._prepared.config.load()
        except Exception as e:
            self._prepared = None
            log.warning("WUI not prepared (retried in the loop): %s", e)

    def _server(self):
        from .server import WebServer

        cfg = self.unit.cfg
        return WebServer(self._app(), cfg.web_bind, cfg.web.port, cfg.web_cert, cfg.web_key)

    def _app(self):
        from .app import create_app
        from .context import WebContext
        from .server import ensure_certificate

        cfg = self.unit.cfg
        ensure_certificate(cfg.web_cert, cfg.web_key, cfg.web_bind, f"carpool-{cfg.role}")
        if self.ctx is None:
            self.ctx = WebContext(self.unit, self.events)
            self.app = create_app(self.ctx)
        return self.app

    async def run(self) -> None:
        """Serve until cancelled; retry listening until it works."""
        cfg = self.unit.cfg
        if not cfg.web.enabled:
            log.info("WUI disabled ([web] enabled = false)")
            return
        attempt = 0
        while True:
            attempt += 1
            try:
                if await self._start():
                    return
            except asyncio.CancelledError:
                raise
            except Exception:  # a broken certificate, a bad bind: logged, never fatal
                log.exception("WUI cannot start")
            if attempt == 1:
                log.error("WUI not available; retrying every %g s (the HA runs without it)", RETRY)
            await asyncio.sleep(RETRY)

    async def _start(self) -> bool:
        server, self._prepared = self._prepared or self._server(), None
        if await server.start():
            self.server = server
            return True
        await server.stop()
        return False

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
        if self.ctx is not None:
            await self.ctx.partner.close()
        self.events.detach()
