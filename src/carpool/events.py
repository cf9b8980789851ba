"""Events: the log records the WUI's event log keeps. A module that reports events logs through
`events.logger(name, kind)`; every record it makes carries `event = kind` as a field, and the
event log (web/events.py) keeps exactly the records that carry one — whatever the logger's name.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import MutableMapping
from typing import Any


class Kind(enum.StrEnum):
    TRANSITION = "transition"
    SYNC = "sync"
    HEALTH = "health"
    LOGIN = "login"
    CONFIG = "config"
    LINK = "link"
    ADDRESSES = "addresses"
    DATAPLANE = "dataplane"
    DOCTOR = "doctor"
    DAEMON = "daemon"
    WEB = "web"


class EventLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger whose records carry their event kind (any `extra` given is kept)."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = {**(kwargs.get("extra") or {}), **(self.extra or {})}
        return msg, kwargs


def logger(name: str, kind: Kind) -> EventLogger:
    return EventLogger(logging.getLogger(name), {"event": kind.value})


def kind_of(record: logging.LogRecord) -> str | None:
    return getattr(record, "event", None)
