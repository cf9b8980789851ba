"""Reboot-loop protection: a unit (re)started more than `unit.restart_limit` (default 3) times
within WINDOW seconds stays standby ("pacified") until an admin clears it with
`carpool pacify --clear`.

A unit that keeps crashing or rebooting must not keep grabbing the shared addresses on each
start. The start times and the pacified mark live in the unit's config_dir (persistent, unlike
state_dir on /run), so a real reboot loop is seen too.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from .. import events, files

log = events.logger("carpool.pacify", events.Kind.DAEMON)
WINDOW = 300.0
KEEP = 20


def decide(starts: list[float], now: float, limit: int) -> str:
    """Why the unit is pacified given its start times (this start included), or ''.
    limit 0: no protection."""
    recent = [t for t in starts if now - WINDOW <= t <= now]
    restarts = len(recent) - 1
    if limit and restarts > limit:
        return (
            f"restarted {restarts} times in {WINDOW / 60:g} min (more than {limit}): "
            f"clear with `carpool pacify --clear`"
        )
    return ""


class StartRecord:
    def __init__(self, directory: str | Path, limit: int):
        self.dir, self.limit = Path(directory), limit
        self.starts_path = self.dir / "starts.json"
        self.mark_path = self.dir / "pacified"

    def _starts(self) -> list[float]:
        try:
            data = json.loads(self.starts_path.read_text())
            return [float(t) for t in data if isinstance(t, (int, float))][-KEEP:]
        except (OSError, ValueError, TypeError):
            return []

    def _write(self, path: Path, text: str) -> None:
        files.private_dir(self.dir)
        files.write_private(path, text)

    def on_start(self, now: float | None = None) -> str:
        """Record this start; the reason the unit is pacified ('' if it is not)."""
        now = time.time() if now is None else now
        starts = self._starts() + [now]
        try:
            self._write(self.starts_path, json.dumps(starts[-KEEP:]))
        except OSError as e:
            log.error("cannot record this start in %s: %s", self.starts_path, e)
        reason = self.marked()
        if not reason:
            reason = decide(starts, now, self.limit)
            if reason:
                try:
                    self._write(self.mark_path, reason + "\n")
                except OSError as e:
                    log.error("cannot write %s: %s", self.mark_path, e)
        return reason

    def marked(self) -> str:
        try:
            return self.mark_path.read_text().strip()
        except OSError:
            return ""

    def clear(self) -> None:
        """Forget the mark and the start history (this start stays the only one)."""
        self.mark_path.unlink(missing_ok=True)
        try:
            self._write(self.starts_path, json.dumps([time.time()]))
        except OSError as e:
            log.error("cannot reset %s: %s", self.starts_path, e)
