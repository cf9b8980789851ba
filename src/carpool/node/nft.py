"""nftables commands from the daemon through libnftables (Debian's python3-nftables, DESIGN §7):
no process per command, which matters for the fence refreshed with each advert. A failure is
counted, kept for status and logged at most once a minute per user: a broken ruleset must
not flood the log, nor stop the unit."""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import nftables

LOG_EVERY = 60.0


class NftCommands:
    def __init__(self, log: logging.Logger | logging.LoggerAdapter, what: str):
        self.log, self.what = log, what
        self.failures = 0
        self.last_error = ""
        self._last_log = float("-inf")
        self._nft: nftables.Nftables | None = None  # imported on first use

    def run(self, commands: str) -> bool:
        return self._cmd(commands) is not None

    def listing(self, command: str) -> dict | None:
        """A `list ...` command's JSON answer (None: it failed, counted as any failure)."""
        out = self._cmd(command, as_json=True)
        try:
            return json.loads(out) if out else None
        except ValueError:
            return None

    def _cmd(self, commands: str, as_json: bool = False) -> str | None:
        try:
            if self._nft is None:
                import nftables

                self._nft = nftables.Nftables()
            self._nft.set_json_output(as_json)
            rc, out, err = self._nft.cmd(commands)
        except Exception as e:  # a missing library or a broken ruleset: not no unit
            rc, out, err = 1, "", f"{type(e).__name__}: {e}"
        if rc == 0:
            return out
        self.failures += 1
        self.last_error = str(err).strip()[:300]
        now = time.monotonic()
        if now - self._last_log >= LOG_EVERY:
            self._last_log = now
            self.log.error(
                "%s: nft failed (%d so far): %s", self.what, self.failures, self.last_error
            )
        return None
