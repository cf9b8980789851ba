"""The versioned configuration store of one unit: atomic writes, history, diff, rollback.

Layout under `<config_dir>/config/`:
    versions/NNNNNNNN-<hash12>.toml   every kept version (the document as TOML)
    versions/NNNNNNNN-<hash12>.json   its record: version, hash, parent, who, when, what, origin
    conflicts/…                       versions that lost a split-brain resolution (never pruned)
    current.toml                      a copy of the current version, with its number and hash

Every file is written to a temp file (files.py: created by the writer alone, 0600, in 0700
directories), fsynced, renamed over, and the directory fsynced: a unit
killed at any moment finds the old version or the new one. At load, current.toml is trusted only
if its hash matches; otherwise the newest intact version file is used (and said so in the log).
"""

from __future__ import annotations

import collections
import json
import math
import re
import time
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .. import events, files
from . import tomlw
from .document import (
    Document,
    DocumentError,
    made_once,
    parse_document,
    to_plain,
    unprintable,
)

log = events.logger("carpool.store", events.Kind.CONFIG)
# The stem is the version with at least 8 digits: a longer number is a longer stem, and found
# at load like any other (it once was not: the version vanished after a restart).
_NAME = re.compile(r"^(\d{8,})-([0-9a-f]{12})\.json$")
_HEADER = re.compile(r"^# carpool configuration version (\d+) hash ([0-9a-f]{64})$")
_HASH = re.compile(r"[0-9a-f]{64}")
# What a record may hold: it comes from the partner (sync) or from disk, and its text reaches
# terminals (`carpool config history`), logs and the WUI.
MAX_VERSION = 2**53 - 1  # exact in JSON everywhere (a browser's numbers too)
MAX_WHEN = 2.0**33  # seconds since 1970: the year 2242
MAX_TEXT = 8192  # who, conflict: a file path and some words
MAX_KEY = 1024  # one changed key
MAX_KEYS = 1_000_000  # changed keys from the partner (one that lists every key of a big first
# version); a commit here keeps KEPT_KEYS of them (they are shown, never used)
KEPT_KEYS = 1000


class StoreError(Exception):
    pass


class RecordError(StoreError, ValueError):
    """A record that is not one: a wrong type, a value out of range (`record.KEY: why`)."""


@dataclass(frozen=True)
class Record:
    """One version's record. Checked when made (here, from the partner or from disk): every
    field its type, in its range, printable."""

    version: int
    hash: str
    parent: str = ""  # hash of the version this one was made from ("" for the first)
    who: str = ""
    when: float = 0.0
    what: tuple[str, ...] = ()  # changed keys
    origin: str = ""  # the unit (first/second) where the change was made
    conflict: str = ""  # non-empty: why this version lost a split-brain resolution

    def __post_init__(self) -> None:
        for key, why in _record_problems(self):
            raise RecordError(f"record.{key}: {why}")

    @property
    def key(self) -> tuple[int, str]:
        return (self.version, self.hash)

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"what": list(self.what)}

    @classmethod
    def from_json(cls, data: object) -> Record:
        """The record in `data` (parsed JSON); RecordError if it is none."""
        if not isinstance(data, dict):
            raise RecordError(f"record: must be an object, not {type(data).__name__}")
        unknown = sorted(set(data) - _RECORD_KEYS, key=str)
        if unknown:
            raise RecordError(f"record.{str(unknown[0])[:40]}: unknown key")
        for key in ("version", "hash"):
            if key not in data:
                raise RecordError(f"record.{key}: required key is missing")
        what = data.get("what", [])
        if not isinstance(what, list):
            raise RecordError(f"record.what: must be a list, not {type(what).__name__}")
        return cls(**{**data, "what": tuple(what)})


_RECORD_KEYS = frozenset(f.name for f in fields(Record))


def _kept(what: tuple[str, ...]) -> tuple[str, ...]:
    if len(what) <= KEPT_KEYS:
        return what
    return (*what[:KEPT_KEYS], f"(and {len(what) - KEPT_KEYS} more)")


def _text_problem(value: object, most: int) -> str:
    if not isinstance(value, str):
        return f"must be a string, not {type(value).__name__}"
    if len(value) > most:
        return f"must be at most {most} characters, not {len(value)}"
    return unprintable(value)


def _record_problems(r: Record) -> list[tuple[str, str]]:
    """(key, why) for each field of r that is wrong; [] for a good record."""
    out = []
    if type(r.version) is not int or not 1 <= r.version <= MAX_VERSION:
        out.append(("version", f"must be an integer 1-{MAX_VERSION}, not {r.version!r:.40}"))
    if not isinstance(r.hash, str) or not _HASH.fullmatch(r.hash):
        out.append(("hash", f"must be 64 lower-case hex digits, not {r.hash!r:.80}"))
    if not isinstance(r.parent, str) or (r.parent and not _HASH.fullmatch(r.parent)):
        out.append(("parent", f"must be empty or 64 lower-case hex digits, not {r.parent!r:.80}"))
    for key, value in (("who", r.who), ("conflict", r.conflict)):
        why = _text_problem(value, MAX_TEXT)
        if why:
            out.append((key, why))
    when = r.when
    if type(when) not in (int, float) or not math.isfinite(when) or not 0 <= when <= MAX_WHEN:
        out.append(("when", f"must be seconds since 1970, 0-{MAX_WHEN:.0f}, not {when!r:.40}"))
    if not isinstance(r.what, tuple) or len(r.what) > MAX_KEYS:
        out.append(("what", f"must be a list of at most {MAX_KEYS} keys"))
    else:
        for n, key in enumerate(r.what):
            why = _text_problem(key, MAX_KEY)
            if why:
                out.append((f"what[{n}]", why))
                break
    if r.origin not in ("", "first", "second"):
        out.append(("origin", f"must be first, second or empty, not {r.origin!r:.40}"))
    return out


@dataclass(frozen=True)
class Version:
    record: Record
    document: Document = field(repr=False)


DOCS_KEPT = 4
# the last documents' TOML (a version's file and current.toml hold the same text)
_TOML: collections.deque[tuple[Document, str]] = collections.deque(maxlen=2)


def _toml(doc: Document) -> str:
    return made_once(_TOML, doc, lambda: tomlw.dumps(to_plain(doc)))


def atomic_write(path: Path, data: bytes) -> None:
    """Temp file (created by us alone, 0600), fsync, rename over, directory fsync."""
    files.write_private(path, data, durable=True)


def flatten(value: object, prefix: str = "") -> dict[str, object]:
    """Dotted keys to scalar values; list items by index, virtual services by name."""
    out: dict[str, object] = {}
    _flatten_into(value, prefix, out)
    return out


def _flatten_into(value: object, prefix: str, out: dict[str, object]) -> None:
    # one dict filled in place: a 1000-service document is 80,000 keys
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten_into(v, f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        for n, v in enumerate(value):
            name = v.get("name", n)
            _flatten_into(v, f"{prefix}[{name if isinstance(name, str) else n}]", out)
    else:
        out[prefix] = value


def diff(old: Document | None, new: Document) -> list[str]:
    """Human-readable changes: `key: old -> new`, `+key = v`, `-key`."""
    a = flatten(old.shown()) if old else {}  # never a private key
    b = flatten(new.shown())
    lines = []
    for key in sorted(set(a) | set(b)):
        if key not in a:
            lines.append(f"+{key} = {json.dumps(b[key])}")
        elif key not in b:
            lines.append(f"-{key} (was {json.dumps(a[key])})")
        elif a[key] != b[key]:
            lines.append(f"{key}: {json.dumps(a[key])} -> {json.dumps(b[key])}")
    return lines


def changed_keys(old: Document | None, new: Document) -> tuple[str, ...]:
    """The dotted keys (flatten's) whose values differ. Equal subtrees are skipped whole (a
    C-level comparison), so a change to one of a thousand services costs that service."""
    a = old.as_json() if old else {}
    return tuple(sorted(_changed(a, new.as_json(), "")))


def _tables(value: object) -> dict[object, dict[str, object]] | None:
    """A list of tables by flatten's label (a string name, else the index), or None."""
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return {
            (v["name"] if isinstance(v.get("name"), str) else n): v for n, v in enumerate(value)
        }
    return None


def _changed(a: object, b: object, prefix: str) -> list[str]:
    if a == b:
        return []
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in a.keys() | b.keys():
            key = f"{prefix}.{k}" if prefix else str(k)
            out += _changed(a.get(k, _MISSING), b.get(k, _MISSING), key)
        return out
    ta, tb = _tables(a), _tables(b)
    if ta is not None and tb is not None:
        out = []
        for label in ta.keys() | tb.keys():
            out += _changed(ta.get(label, _MISSING), tb.get(label, _MISSING), f"{prefix}[{label}]")
        return out
    if a is _MISSING or b is _MISSING:  # added or removed whole: each of its keys
        return list(flatten(b if a is _MISSING else a, prefix))
    fa, fb = flatten(a, prefix), flatten(b, prefix)
    return [k for k in fa.keys() | fb.keys() if fa.get(k, _MISSING) != fb.get(k, _MISSING)]


_MISSING = object()


class Store:
    def __init__(self, directory: str | Path, keep: int = 50):
        self.dir = Path(directory)
        self.keep = keep
        self.versions = self.dir / "versions"
        self.conflicts = self.dir / "conflicts"
        for d in (self.dir, self.versions, self.conflicts):
            files.private_dir(d)  # 0700: the documents hold the WUI users' password hashes
        self._current: Version | None = None
        self._index: dict[Path, list[Record]] = {}
        # the last documents written or read, by record: a push of the version just committed
        # reads no file back (a 1000-service document is 0.3 s of TOML parsing and validation)
        self._docs: collections.OrderedDict[tuple[Path, str], Document] = collections.OrderedDict()
        self._load()

    # -- reading ---------------------------------------------------------------------------
    @property
    def current(self) -> Version | None:
        return self._current

    def _stem(self, record: Record) -> str:
        return f"{record.version:08d}-{record.hash[:12]}"

    def _records(self, where: Path) -> list[Record]:
        """The records kept in `where` (an in-memory index, read from disk once)."""
        if where not in self._index:
            self._index[where] = self._scan(where)
        return list(self._index[where])

    def _scan(self, where: Path) -> list[Record]:
        found = []
        for path in where.glob("*.json"):
            if not _NAME.match(path.name):
                continue
            try:
                found.append(Record.from_json(json.loads(path.read_text())))
            except (OSError, ValueError, TypeError) as e:
                log.warning("ignoring unreadable record %s: %s", path, e)
        return sorted(found, key=lambda r: (r.version, r.when))

    def history(self, conflicts: bool = True) -> list[Record]:
        """Kept versions, oldest first; with conflicts, the lost ones too (by version)."""
        records = self._records(self.versions)
        if conflicts:
            records += self._records(self.conflicts)
        return sorted(records, key=lambda r: (r.version, bool(r.conflict), r.when))

    def _read(self, where: Path, record: Record) -> Document:
        known = self._docs.get((where, self._stem(record)))
        if known is not None:
            return known
        path = where / f"{self._stem(record)}.toml"
        doc = parse_document(tomllib.loads(path.read_text()))
        if doc.hash != record.hash:
            raise StoreError(f"{path}: content hash {doc.hash[:12]} does not match the record")
        self._remember(where, record, doc)
        return doc

    def _remember(self, where: Path, record: Record, doc: Document) -> None:
        self._docs[(where, self._stem(record))] = doc
        self._docs.move_to_end((where, self._stem(record)))
        while len(self._docs) > DOCS_KEPT:
            self._docs.popitem(last=False)

    def get(self, version: int, hash_: str | None = None) -> Version:
        """A kept version (a conflict too); `hash_` (or a prefix) picks one of two with the
        same number after a split."""
        for where in (self.versions, self.conflicts):
            for record in reversed(self._records(where)):
                if record.version == version and (hash_ is None or record.hash.startswith(hash_)):
                    return Version(record, self._read(where, record))
        raise StoreError(
            f"version {version} is not in the history "
            f"(kept: {', '.join(str(r.version) for r in self.history()) or 'none'})"
        )

    def _load(self) -> None:
        path = self.dir / "current.toml"
        if path.exists():
            try:
                text = path.read_text()
                m = _HEADER.match(text.splitlines()[0])
                if not m:
                    raise StoreError("no version header")
                doc = parse_document(tomllib.loads(text))
                record = next(
                    (r for r in self._records(self.versions) if r.key == (int(m[1]), m[2])), None
                )
                if doc.hash != m[2] or record is None:
                    raise StoreError("hash or record does not match")
                self._current = Version(record, doc)
                newest = self._records(self.versions)[-1]
                if newest.version <= record.version:
                    return
                # killed after writing a newer version but before making it current: every
                # version file is complete when its record exists, so the newer one stands
                log.warning(
                    "version %d was stored but not yet current: completing it", newest.version
                )
            except (
                OSError,
                IndexError,
                ValueError,
                StoreError,
                DocumentError,
                tomllib.TOMLDecodeError,
            ) as e:
                log.error("%s unusable (%s): falling back to the newest intact version", path, e)
        for record in reversed(self._records(self.versions)):
            try:
                self._current = Version(record, self._read(self.versions, record))
                self._write_current(self._current)
                return
            except (OSError, StoreError, DocumentError, tomllib.TOMLDecodeError) as e:
                log.error("version %d unreadable: %s", record.version, e)

    # -- writing ---------------------------------------------------------------------------
    def _write_version(self, where: Path, record: Record, doc: Document) -> None:
        stem = self._stem(record)
        atomic_write(where / f"{stem}.toml", _toml(doc).encode())
        atomic_write(where / f"{stem}.json", json.dumps(record.to_json(), indent=1).encode())
        index = [r for r in self._records(where) if r.key != record.key] + [record]
        self._index[where] = sorted(index, key=lambda r: (r.version, r.when))
        self._remember(where, record, doc)

    def _forget(self, where: Path, record: Record) -> None:
        for suffix in (".json", ".toml"):  # record first: a half-removed version is ignored
            (where / f"{self._stem(record)}{suffix}").unlink(missing_ok=True)
        self._docs.pop((where, self._stem(record)), None)
        self._index[where] = [r for r in self._records(where) if r.key != record.key]

    def _write_current(self, current: Version) -> None:
        r, doc = current.record, current.document
        header = (
            f"# carpool configuration version {r.version} hash {r.hash}\n"
            f"# written by carpool; change it with `carpool config`, not by hand\n"
        )
        atomic_write(self.dir / "current.toml", (header + _toml(doc)).encode())

    def commit(
        self,
        doc: Document,
        who: str,
        origin: str = "",
        what: tuple[str, ...] | None = None,
        when: float | None = None,
    ) -> Version:
        """Store `doc` as the next version and make it current. A document equal to the
        current one is not a new version (returned as is)."""
        old = self._current
        if old and old.document.hash == doc.hash:
            return old
        kept = self._records(self.versions)
        record = Record(
            # after every kept version (an unreadable newest one too: current is older then)
            version=max([old.record.version if old else 0] + [r.version for r in kept[-1:]]) + 1,
            hash=doc.hash,
            parent=old.record.hash if old else "",
            who=who,
            when=time.time() if when is None else when,
            what=_kept(changed_keys(old.document if old else None, doc) if what is None else what),
            origin=origin,
        )
        return self.adopt(record, doc)

    def adopt(self, record: Record, doc: Document) -> Version:
        """Store a version made elsewhere (the partner) under its own number and make it
        current. Raises StoreError if the document does not match the record."""
        return self.adopt_many([Version(record, doc)])

    def adopt_many(self, versions: list[Version]) -> Version:
        """adopt() for a batch, oldest first: the last becomes current (written once)."""
        for v in versions:
            if v.document.hash != v.record.hash:
                raise StoreError(f"version {v.record.version}: content hash does not match")
        self._check_order([v.record for v in versions])
        for v in versions:
            self._write_version(self.versions, v.record, v.document)
        self._current = versions[-1]
        self._write_current(self._current)
        self._prune()
        return self._current

    def _check_order(self, batch: list[Record]) -> None:
        """The batch in increasing versions, none taking the number of another kept version,
        the last the newest kept: the current version is the newest, or a restart would make
        the newest current (see _load)."""
        numbers = [r.version for r in batch]
        if any(a >= b for a, b in zip(numbers, numbers[1:], strict=False)):
            raise StoreError(f"versions {numbers[:8]} are not in increasing order")
        adopted = {r.key for r in batch}
        kept = [r for r in self._records(self.versions) if r.key not in adopted]
        taken = {r.version: r.hash for r in kept}
        for r in batch:
            if r.version in taken:
                raise StoreError(
                    f"version {r.version} is kept here with another content "
                    f"({taken[r.version][:12]}, not {r.hash[:12]})"
                )
        if batch and kept and kept[-1].version > batch[-1].version:
            raise StoreError(
                f"version {batch[-1].version} would not be the newest (version "
                f"{kept[-1].version} is kept here)"
            )

    def keep_as_conflict(self, record: Record, why: str) -> None:
        """Move a kept version that lost a split-brain resolution to conflicts/ (kept)."""
        version = self.get(record.version, record.hash)
        lost = Record(**{**asdict(version.record), "conflict": why})
        self._write_version(self.conflicts, lost, version.document)
        self._forget(self.versions, record)

    def _prune(self) -> None:
        records = self._records(self.versions)
        for record in records[: max(0, len(records) - self.keep)]:
            if self._current and record.key == self._current.record.key:
                continue
            self._forget(self.versions, record)

    def rollback(self, version: int, who: str, origin: str = "") -> Version:
        target = self.get(version)
        if target.record.conflict:
            log.info("rolling back to conflict version %d (%s)", version, target.record.conflict)
        return self.commit(target.document, who=f"{who} (rollback to {version})", origin=origin)
