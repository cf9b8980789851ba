"""The event log the WUI shows: transitions, sync, health changes, logins, configuration.

Fed from the daemon's own log records (one source of truth: what the journal says, the WUI
shows): those that carry an event kind (carpool/events.py), kept in memory, newest last, and
with a path appended to a file there (one JSON object a line), so a restarted daemon shows what
happened before. The file is bounded: past MAX_BYTES it becomes `<path>.1` (the one before is
dropped), so the log on disk never holds more than twice that."""

from __future__ import annotations

import collections
import json
import logging
import os
import time
from pathlib import Path

from ..events import Kind, kind_of

KINDS = tuple(k.value for k in Kind)
MAX_BYTES = 1024 * 1024
MAX_TEXT = 2000  # characters of one event's text kept (a long message is cut, not dropped)


def _event_shaped(event: object) -> bool:
    """A line of ours: the fields the pages and the API read, of their types."""
    return (
        isinstance(event, dict)
        and isinstance(event.get("id"), int)
        and isinstance(event.get("time"), (int, float))
        and all(isinstance(event.get(k), str) for k in ("kind", "level", "text"))
    )


class EventLog(logging.Handler):
    def __init__(self, size: int = 500, path: str | Path | None = None, unit: str = ""):
        super().__init__(logging.INFO)
        self.events: collections.deque = collections.deque(maxlen=size)
        self.seq = 0
        self.unit = unit
        self.path = Path(path) if path else None
        self.write_errors = 0
        if self.path is not None:
            self._load()

    def _load(self) -> None:
        """The newest `size` events of the files (older first); a line that is no event of
        ours (a torn last write, an edit by hand) is skipped."""
        assert self.path is not None
        for path in (self.path.with_name(self.path.name + ".1"), self.path):
            try:
                lines = path.read_text(errors="replace").splitlines()
            except OSError:
                continue
            for line in lines[-(self.events.maxlen or 0) :]:
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if _event_shaped(event):
                    self.events.append(event)
                    self.seq = max(self.seq, event["id"])

    def _store(self, event: dict) -> None:
        assert self.path is not None
        line = json.dumps(event, separators=(",", ":")) + "\n"
        try:
            if self.path.exists() and self.path.stat().st_size + len(line) > MAX_BYTES:
                os.replace(self.path, self.path.with_name(self.path.name + ".1"))
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
        except OSError:
            self.write_errors += 1  # counted; logging about it here would recurse

    def emit(self, record: logging.LogRecord) -> None:
        kind = kind_of(record)
        if kind is None:
            return
        try:
            text = record.getMessage()
        except Exception:  # a bad format string must not break logging
            text = str(record.msg)
        self.seq += 1
        event = {
            "id": self.seq,
            "time": record.created,
            "kind": kind,
            "level": record.levelname.lower(),
            "unit": self.unit,
            "text": text[:MAX_TEXT],
        }
        self.events.append(event)
        if self.path is not None:
            self._store(event)

    def recent(
        self, kind: str | None = None, since: int = 0, limit: int = 200, search: str = ""
    ) -> list[dict]:
        """Events after `since`, of one kind, whose text contains `search` (any case)."""
        needle = search.casefold()
        found = [
            e
            for e in self.events
            if e["id"] > since
            and (kind is None or e["kind"] == kind)
            and (not needle or needle in str(e.get("text", "")).casefold())
        ]
        return found[-limit:]

    def attach(self) -> None:
        logging.getLogger("carpool").addHandler(self)

    def detach(self) -> None:
        logging.getLogger("carpool").removeHandler(self)


def when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
