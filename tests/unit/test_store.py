"""The versioned store: versions, history, diff, rollback, pruning, and SIGKILL during writes."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from carpool.config.document import DocumentError, parse_document
from carpool.config.store import Record, RecordError, Store, StoreError, Version, diff

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


# -- records from the partner (issue 13: a synced document cannot hurt the unit) -------------
def record(d, version, **fields):
    return Record(version=version, hash=d.hash, **fields)


def test_a_partners_version_number_survives_a_restart(tmp_path):
    """Version files were found at load by an 8-digit stem: a 9-digit version (from the
    partner) was stored, then ignored after a restart, and current.toml fell back to an
    older version."""
    s = Store(tmp_path)
    s.commit(doc("one"), who="a")
    two = doc("two")
    s.adopt(record(two, 123_456_789, who="partner", origin="second"), two)
    reopened = Store(tmp_path)
    assert [r.version for r in reopened.history()] == [1, 123_456_789]
    assert reopened.current.record.version == 123_456_789 and reopened.current.document == two


def test_a_batch_that_would_not_end_newest_is_refused(tmp_path):
    """current is the newest kept version, or a restart makes the newest current."""
    s = Store(tmp_path)
    s.commit(doc("one"), who="a")
    v2 = s.commit(doc("two"), who="a")
    three, four = doc("three"), doc("four")
    for batch in (
        [Version(record(three, 1), three)],  # older than current
        [Version(record(four, 4), four), Version(record(three, 3), three)],  # out of order
        [Version(record(three, 2), three)],  # version 2 is kept with another hash
    ):
        with pytest.raises(StoreError):
            s.adopt_many(batch)
        assert Store(tmp_path).current.record == v2.record == s.current.record
    s.adopt_many([Version(record(three, 3), three), Version(record(four, 4), four)])
    assert Store(tmp_path).current.record.version == 4


GOOD_RECORD = {
    "version": 3,
    "hash": "a" * 64,
    "parent": "b" * 64,
    "who": "web: admin",
    "when": 1767225600.25,
    "what": ["ha.vhid", "virtual_service[web].port"],
    "origin": "first",
    "conflict": "",
}


def test_a_good_record_round_trips():
    assert Record.from_json(GOOD_RECORD).to_json() == GOOD_RECORD
    assert Record.from_json({"version": 1, "hash": "0" * 64}).who == ""


@pytest.mark.parametrize(
    "key, value",
    [
        ("version", "3"),
        ("version", 3.0),
        ("version", True),
        ("version", 0),
        ("version", -1),
        ("version", 2**53),
        ("hash", "A" * 64),
        ("hash", "a" * 63),
        ("hash", "../../../etc/passwd" + "a" * 45),
        ("hash", None),
        ("parent", "x"),
        ("who", "admin\n2 admin forged line"),
        ("who", "\x1b]0;owned\x07"),
        ("who", "w" * 8193),
        ("who", 7),
        ("when", float("nan")),
        ("when", float("inf")),
        ("when", -1.0),
        ("when", 2.0**40),
        ("when", "yesterday"),
        ("when", True),
        ("what", "ha.vhid"),
        ("what", [1, 2]),
        ("what", ["ok", "bad\r\nkey"]),
        ("what", ["k" * 1025]),
        ("what", {"a": 1}),
        ("origin", "third"),
        ("conflict", "lost\x00"),
        ("conflict", ["x"]),
    ],
)
def test_a_bad_record_field_is_refused_naming_it(key, value):
    with pytest.raises(RecordError, match=rf"^record\.{key}(\[\d+\])?: "):
        Record.from_json({**GOOD_RECORD, key: value})


@pytest.mark.parametrize(
    "data",
    [[], "x", None, {**GOOD_RECORD, "extra": 1}, {"hash": "a" * 64}, {"version": 1}],
)
def test_a_record_that_is_no_record_is_refused(data):
    with pytest.raises(RecordError):
        Record.from_json(data)


def test_a_tampered_record_on_disk_is_ignored_not_a_crash(tmp_path):
    s = Store(tmp_path)
    v1 = s.commit(doc("one"), who="a")
    bad = {**v1.record.to_json(), "version": "9", "when": "x"}
    (tmp_path / "versions" / f"00000009-{v1.record.hash[:12]}.json").write_text(json.dumps(bad))
    assert [r.version for r in Store(tmp_path).history()] == [1]


def test_a_commit_after_an_unreadable_newest_version_is_numbered_after_it(tmp_path):
    s = Store(tmp_path)
    s.commit(doc("one"), who="a")
    v2 = s.commit(doc("two"), who="a")
    (tmp_path / "versions" / f"00000002-{v2.record.hash[:12]}.toml").write_text("garbage = [")
    (tmp_path / "current.toml").unlink()
    reopened = Store(tmp_path)
    assert reopened.current.record.version == 1  # the newest intact one
    v3 = reopened.commit(doc("three"), who="a")
    assert v3.record.version == 3 and Store(tmp_path).current.record == v3.record


def test_a_bad_record_from_the_partner_is_a_refusal_not_an_error():
    from carpool.node.sync import SyncRefused, _parse_versions

    two = doc("two")
    good = {"record": {"version": 2, "hash": two.hash}, "document": two.model_dump(mode="json")}
    assert _parse_versions([good])[0].record.version == 2
    for bad in ({"version": "2"}, {"version": 2, "hash": two.hash, "who": "\x1b[2J"}, []):
        with pytest.raises(SyncRefused, match="invalid version from partner"):
            _parse_versions([{**good, "record": bad}])


def test_a_commit_keeps_a_thousand_changed_keys_not_every_key_of_a_big_document(tmp_path):
    s = Store(tmp_path)
    services = [{"name": f"vs{n}", "address": "198.18.0.10", "port": n + 1} for n in range(600)]
    v1 = s.commit(parse_document({**BASE, "virtual_service": services}), who="seed")
    assert len(v1.record.what) == 1001 and v1.record.what[-1].startswith("(and ")
    assert Store(tmp_path).current.record == v1.record


def test_a_document_hashes_as_the_release_before_hashed_it(tmp_path):
    """A field added later (ha.auth) at its default is left out of the canonical form: a
    version stored by the release before stays intact after an upgrade (its record's hash
    still matches), and both units of a pair mid-upgrade agree on a document's hash."""
    d = doc("stored by the release before")
    before = d.model_dump(mode="json")
    for key in ("auth", "liveness_ms", "liveness_multiplier", "handover_drain"):
        del before["ha"][key]  # what the release before dumped (and before certificates)
    del before["certificate"]
    for vs in before["virtual_service"]:
        for key in ("certificate", "tls_profile", "hsts", "redirect_http", "backend_tls"):
            del vs[key]
        del vs["backend_ca"]
    old_hash = hashlib.sha256(
        json.dumps(before, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()
    assert d.hash == old_hash
    assert doc("stored by the release before", auth="carp").hash != d.hash


def test_changed_keys_skips_equal_subtrees_and_names_what_flatten_names():
    """Every difference of the flattened documents, and nothing else, whatever changed."""
    from carpool.config.store import changed_keys, flatten

    def reference(old, new):
        a = flatten(old.model_dump(mode="json")) if old else {}
        b = flatten(new.model_dump(mode="json"))
        return tuple(sorted(k for k in set(a) | set(b) if a.get(k, ...) != b.get(k, ...)))

    services = [
        {
            "name": f"vs{n}",
            "address": "198.18.0.10",
            "port": 1000 + n,
            "real_server": [{"address": f"198.18.2.{101 + k}", "port": 80} for k in range(3)],
        }
        for n in range(6)
    ]
    base = parse_document({**BASE, "virtual_service": services})
    rng = random.Random(5)
    for trial in range(30):
        raw = json.loads(json.dumps({**BASE, "virtual_service": services}))
        vs, n = raw["virtual_service"], rng.randrange(len(services))
        match trial % 6:
            case 0:
                vs[n]["port"] = 60000
            case 1:
                del vs[n]
            case 2:
                vs.append({**vs[n], "name": f"new{trial}", "port": 50000})
            case 3:
                vs[n]["real_server"] = vs[n]["real_server"][:1]
            case 4:
                vs[0], vs[1] = vs[1], vs[0]
            case 5:
                raw["appliance"] = {"description": f"d{trial}"}
        new = parse_document(raw)
        assert changed_keys(base, new) == reference(base, new)
        assert changed_keys(None, new) == reference(None, new)
    assert changed_keys(base, base) == ()


def test_what_config_show_prints_reads_back_as_the_same_document():
    """`carpool config show` writes the shown document as TOML: an unset key (None, the
    automatic fast detector) is left out, and the text parses back to the same hash."""
    import tomllib

    from carpool.config import tomlw

    for d in (doc("automatic"), doc("written", liveness_ms=100, liveness_multiplier=3)):
        text = tomlw.dumps(d.shown())
        assert parse_document(tomllib.loads(text)).hash == d.hash, text
    assert "liveness_ms" not in tomlw.dumps(doc("automatic").shown())


def test_a_pair_of_two_releases_agrees_on_documents_across_the_liveness_default_change():
    """The release before sent every key, with ha.liveness_ms = 100 and liveness_multiplier =
    3 at its defaults, and left those out of its hash; this one means unset (automatic) by a
    document without them. Its versions are taken as unset; ours are sent without the unset
    keys, so the release before fills in its defaults and hashes them as we do. A document
    that matches neither way is still refused."""
    from carpool.node.sync import SyncRefused, _parse_versions

    unset = doc("mid-upgrade")
    earlier = unset.model_dump(mode="json")
    earlier["ha"].update(liveness_ms=100, liveness_multiplier=3)  # what it sent
    record = {"version": 4, "hash": unset.hash}  # what it hashed: both left out
    taken = _parse_versions([{"record": record, "document": earlier}])[0]
    assert taken.document.ha.liveness_ms is None and taken.document.hash == unset.hash

    sent = unset.wire()
    assert "liveness_ms" not in sent["ha"] and "liveness_multiplier" not in sent["ha"]
    # the release before: its model fills in 100 and 3, its hash leaves them out again
    filled = {**sent, "ha": {**sent["ha"], "liveness_ms": 100, "liveness_multiplier": 3}}
    its_defaults = {("liveness_ms", 100), ("liveness_multiplier", 3)}
    as_it_hashes = {
        **filled,
        "ha": {k: v for k, v in filled["ha"].items() if (k, v) not in its_defaults},
    }
    assert (
        hashlib.sha256(
            json.dumps(as_it_hashes, sort_keys=True, separators=(",", ":")).encode()
        ).hexdigest()
        == unset.hash
    )

    written = doc("mid-upgrade", liveness_ms=200)
    assert written.wire()["ha"]["liveness_ms"] == 200  # a written value travels as before
    with pytest.raises(SyncRefused, match="hash does not match"):
        _parse_versions([{"record": {"version": 5, "hash": written.hash}, "document": earlier}])
