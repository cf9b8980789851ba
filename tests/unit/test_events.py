"""The WUI's event log keeps the records that carry an event kind — from any logger — and
nothing else; a failure of conntrackd or of the shared addresses reaches it."""

import logging

import pytest

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


@pytest.fixture
def info_level():
    """The daemon's level on the carpool loggers (INFO) for one test."""
    carpool_log = logging.getLogger("carpool")
    previous = carpool_log.level
    carpool_log.setLevel(logging.INFO)
    yield
    carpool_log.setLevel(previous)


def test_the_event_log_survives_a_restart_bounded_on_disk(tmp_path, monkeypatch, info_level):
    from carpool.web import events as web_events

    path = tmp_path / "events.jsonl"
    first = EventLog(100, path, "first")
    first.attach()
    try:
        log = events.logger("carpool.daemon", events.Kind.TRANSITION)
        log.info("backup -> master: master down")
        events.logger("carpool.health", events.Kind.HEALTH).warning("real server 198.18.2.101 down")
    finally:
        first.detach()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    with path.open("a") as f:
        f.write('{"torn": \n')  # a write cut short by a crash: skipped
    again = EventLog(100, path, "first")  # the daemon restarted
    assert [(e["unit"], e["kind"], e["text"]) for e in again.recent()] == [
        ("first", "transition", "backup -> master: master down"),
        ("first", "health", "real server 198.18.2.101 down"),
    ]
    assert [e["kind"] for e in again.recent(search="SERVER 198")] == ["health"]
    assert again.seq == 2  # numbering goes on where it was
    # bounded: past MAX_BYTES the file rotates once; the disk holds at most twice that
    monkeypatch.setattr(web_events, "MAX_BYTES", 400)
    again.attach()
    try:
        for n in range(50):
            events.logger("carpool.web", events.Kind.LOGIN).info("login %d of admin", n)
    finally:
        again.detach()
    sizes = [p.stat().st_size for p in tmp_path.iterdir()]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["events.jsonl", "events.jsonl.1"]
    assert all(s <= 400 for s in sizes)
    third = EventLog(100, path, "first")
    assert third.recent()[-1]["text"] == "login 49 of admin"


def test_a_line_without_the_fields_the_pages_read_is_skipped(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text(
        '{"id": 1, "time": 1.0, "kind": "login", "level": "info", "unit": "first", "text": "ok"}\n'
        '{"id": 2}\n'
        '{"id": 3, "time": "x", "kind": "login", "level": "info", "text": "bad time"}\n'
    )
    log = EventLog(10, path, "first")
    assert [e["text"] for e in log.recent()] == ["ok"] and log.seq == 1
