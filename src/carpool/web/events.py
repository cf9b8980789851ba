"""The event log the WUI shows: transitions, sync, health changes, logins, configuration.

Fed from the daemon's own log records (one source of truth: what the journal says, the WUI
shows): those that carry an event kind (carpool/events.py), kept in memory, newest last."""

from __future__ import annotations

import collections
import logging
import time

from ..events import Kind, kind_of

KINDS = tuple(k.value for k in Kind)


class EventLog(logging.Handler):
    def __init__(self, size: int = 500):
        super().__init__(logging.INFO)
        self.events: collections.deque = collections.deque(maxlen=size)
        self.seq = 0

    def emit(self, record: logging.LogRecord) -> None:
        kind = kind_of(record)
        if kind is None:
            return
        try:
            text = record.getMessage()
        except Exception:  # a bad format string must not break logging
            text = str(record.msg)
        self.seq += 1
        self.events.append(
            {
                "id": self.seq,
                "time": record.created,
                "kind": kind,
                "level": record.levelname.lower(),
                "text": text,
            }
        )

    def recent(self, kind: str | None = None, since: int = 0, limit: int = 200) -> list[dict]:
        found = [e for e in self.events if e["id"] > since and (kind is None or e["kind"] == kind)]
        return found[-limit:]

    def attach(self) -> None:
        logging.getLogger("carpool").addHandler(self)

    def detach(self) -> None:
        logging.getLogger("carpool").removeHandler(self)


def when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
