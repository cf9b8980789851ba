"""The WUI's event log keeps the records that carry an event kind — from any logger — and
nothing else; a failure of conntrackd or of the shared addresses reaches it."""

import logging

from carpool import events
from carpool.web.events import EventLog


def test_event_log_keeps_records_with_a_kind_whatever_the_logger():
    log = EventLog()
    log.attach()
    try:
        events.logger("carpool.conntrack", events.Kind.DATAPLANE).error("conntrackd exited: 1")
        events.logger("carpool.addresses", events.Kind.ADDRESSES).error(
            "cannot add shared address %s", "198.18.0.10/24", extra={"detail": 1}
        )
        logging.getLogger("carpool.election").warning("no kind: not an event")
        logging.getLogger("carpool.somewhere").info("nor this", extra={"other": 1})
    finally:
        log.detach()
    assert [(e["kind"], e["level"], e["text"]) for e in log.recent()] == [
        ("dataplane", "error", "conntrackd exited: 1"),
        ("addresses", "error", "cannot add shared address 198.18.0.10/24"),
    ]
    assert [e["kind"] for e in log.recent("addresses")] == ["addresses"]


def test_every_module_logger_that_feeds_the_wui_has_a_known_kind():
    assert {k.value for k in events.Kind} >= {
        "transition",
        "sync",
        "health",
        "login",
        "config",
        "link",
    }
