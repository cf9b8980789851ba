"""Contracts between modules carried by types, not by words in a message: a stale sync push,
the sync states /metrics knows, the kind of a status warning."""

from __future__ import annotations

import asyncio

import pytest
from edits import Unit

from carpool.node import findings
from carpool.node.sync import StalePush, SyncRefused, SyncService, SyncState
from carpool.web.metrics import Metrics
from carpool.web.view import icon


class Channel:
    def __init__(self, reply: dict):
        self.reply = reply

    async def send(self, msg: dict) -> None:
        pass

    async def recv(self) -> dict:
        return self.reply


def test_a_stale_push_is_answered_with_its_code_and_raised_as_stale_push(tmp_path):
    sync = Unit(tmp_path).config.sync
    reply = asyncio.run(sync._answer({"type": "push", "versions": [], "expect": [9, "ab"]}))
    assert reply["type"] == "error" and reply["code"] == StalePush.CODE
    with pytest.raises(StalePush):
        asyncio.run(SyncService._call(sync, Channel(reply), {"type": "push"}))
    other = {"type": "error", "error": "stale push: an older partner says so in words only"}
    with pytest.raises(SyncRefused) as e:
        asyncio.run(SyncService._call(sync, Channel(other), {"type": "push"}))
    assert not isinstance(e.value, StalePush)


def test_sync_status_shows_down_with_its_reason(tmp_path):
    sync = Unit(tmp_path).config.sync
    assert sync.status()["state"] == "idle"
    sync.state, sync.last_error = SyncState.DOWN, "connection refused"
    assert sync.status()["state"] == "sync down: connection refused"


def _status(sync_state: str) -> dict:
    return {
        "state": "master",
        "counters": {"transitions": 1, "adverts_sent": 2, "adverts_received": 3, "send_errors": 0},
        "drops": {},
        "demote": 0,
        "partner": {},
        "config": {"version": 4},
        "sync": {"state": sync_state},
        "dataplane": {
            "servers": [],
            "l4": {"applies": 1, "failures": 0},
            "l7": {"reloads": 0, "running": False},
        },
    }


@pytest.mark.parametrize(
    "state, ok",
    [
        *[(str(s), s is SyncState.IN_SYNC) for s in SyncState if s is not SyncState.DOWN],
        ("sync down: connection refused", False),
        ("ok", False),
        ("synced", False),  # never states of ours
    ],
)
def test_metrics_sync_ok_only_in_sync(state, ok):
    text = Metrics().render(_status(state), [], []).decode()
    assert f"carpool_sync_ok {1.0 if ok else 0.0}" in text


def test_warnings_carry_their_kind_and_the_icon_reads_the_kind():
    status = {"state": "master", "partner": {"eth0": {"ping_ok": True, "advert_alive": False}}}
    [w] = findings.warnings(status, {"state": "master", "at": 100.0}, [], now=105.0)
    assert w.kind is findings.Warn.MASTER_MASTER and isinstance(w, str)
    foreign = [{"source": "198.18.0.50", "interface": "eth0", "kind": "carp", "last_ago": 1.0}]
    [w] = findings.warnings({"state": "backup", "vhid": 1}, None, foreign, now=0.0)
    assert w.kind is findings.Warn.FOREIGN_VHID
    assert icon({"state": "master", "warning_kinds": ["master-master"]}, None) == "master-master"
    assert icon({"state": "master", "warnings": ["master-master: words only"]}, None) == "active"
