"""The versioned store: versions, history, diff, rollback, pruning, and SIGKILL during writes."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from carpool.config.document import DocumentError, parse_document
from carpool.config.store import Store, diff

BASE = {
    "interface": [
        {
            "name": "eth0",
            "first": "198.18.0.11",
            "second": "198.18.0.12",
            "shared": ["198.18.0.10/24"],
        }
    ]
}


def doc(description="", **ha):
    return parse_document({**BASE, "appliance": {"description": description}, "ha": ha})


def test_commit_numbers_versions_and_skips_no_change(tmp_path):
    s = Store(tmp_path)
    assert s.current is None
    v1 = s.commit(doc("one"), who="admin", origin="first")
    v2 = s.commit(doc("two"), who="admin", origin="first")
    assert (v1.record.version, v2.record.version) == (1, 2)
    assert v2.record.parent == v1.record.hash and v2.record.what == ("appliance.description",)
    assert s.commit(doc("two"), who="admin") is v2  # same content: no new version
    reopened = Store(tmp_path)
    assert reopened.current.record == v2.record and reopened.current.document == v2.document


def test_history_diff_and_rollback(tmp_path):
    s = Store(tmp_path)
    s.commit(doc("one"), who="a")
    s.commit(doc("two", vhid=5), who="b")
    assert [r.version for r in s.history()] == [1, 2]
    assert diff(s.get(1).document, s.get(2).document) == [
        'appliance.description: "one" -> "two"',
        "ha.vhid: 1 -> 5",
    ]
    v3 = s.rollback(1, who="c")
    assert v3.record.version == 3 and v3.document == s.get(1).document
    assert "rollback to 1" in v3.record.who


def test_rollback_to_unknown_version_says_what_is_kept(tmp_path):
    s = Store(tmp_path)
    s.commit(doc("one"), who="a")
    with pytest.raises(Exception, match="version 9 is not in the history .*kept: 1"):
        s.rollback(9, who="x")


def test_history_is_pruned_to_keep_but_not_conflicts(tmp_path):
    s = Store(tmp_path, keep=5)
    for n in range(12):
        s.commit(doc(f"v{n}"), who="a")
    s.keep_as_conflict(s.history()[-2], "lost to first's version 13")
    s.commit(doc("after"), who="a")
    kept = s.history()
    assert [r.version for r in kept if not r.conflict] == [8, 9, 10, 12, 13]
    assert [r.version for r in kept if r.conflict] == [11]


def test_a_corrupt_current_file_falls_back_to_the_newest_intact_version(tmp_path):
    s = Store(tmp_path)
    s.commit(doc("one"), who="a")
    v2 = s.commit(doc("two"), who="a")
    (tmp_path / "current.toml").write_text("garbage = [")
    assert Store(tmp_path).current.record == v2.record


def test_invalid_documents_never_reach_the_store(tmp_path):
    s = Store(tmp_path)
    with pytest.raises(DocumentError):
        s.commit(parse_document({**BASE, "ha": {"vhid": 0}}), who="a")
    assert s.current is None and not list((tmp_path / "versions").iterdir())


WRITER = """
import sys
from carpool.config.document import parse_document
from carpool.config.store import Store
s = Store(sys.argv[1])
base = {"interface": [{"name": "eth0", "first": "198.18.0.11", "second": "198.18.0.12"}]}
print("ready", flush=True)
for n in range(100000):
    s.commit(parse_document({**base, "appliance": {"description": "x" * (n % 4000)}}), who="w")
"""


def test_sigkill_at_any_moment_leaves_a_readable_store(tmp_path):
    rng = random.Random(7)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    last = 0
    for round_ in range(12):  # bounded: 12 kills at random moments
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, env=env
        )
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0.0, 0.15))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        store = Store(tmp_path)
        current = store.current
        assert current is not None, f"round {round_}: nothing readable"
        assert current.document.hash == current.record.hash
        assert current.record.version >= last
        last = current.record.version
    assert last > 12


def test_a_version_stored_but_not_yet_current_is_completed_at_load(tmp_path):
    s = Store(tmp_path)
    s.commit(doc("one"), who="a")
    current = (tmp_path / "current.toml").read_text()
    v2 = s.commit(doc("two"), who="a")
    (tmp_path / "current.toml").write_text(current)  # killed between the two writes
    reopened = Store(tmp_path)
    assert reopened.current.record == v2.record
    assert reopened.history()[-1].key == reopened.current.record.key
