"""The daemon's configuration side: the store, the control commands (`carpool config ...`,
and `config.edit`: the typed operations of config/edit.py) and the sync service. Changes are
accepted on the active unit only; each becomes a version, is applied, then pushed to the partner
at once. Refusals are config/edit.py's typed errors, as JSON."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from .. import events, files
from ..config import certs
from ..config.document import (
    Document,
    DocumentError,
    Loc,
    Problem,
    parse_document,
    with_stored_keys,
)
from ..config.edit import Edit, EditError, Invalid, NotFound, Refused, SetKey, Standby, invalid
from ..config.ha import Config, with_document
from ..config.store import Store, StoreError, Version, diff
from .storeio import current_version
from .sync import SyncService

log = events.logger("carpool.config", events.Kind.CONFIG)
PUSH_FIRST = 0.25  # s a commit waits for its push to be on the wire before applying here


def open_store(cfg: Config) -> Store:
    """The unit's store, seeded from the configuration file: on first start, and whenever the
    file's document changed since it was last seeded (an admin edited it)."""
    doc = cfg.document
    assert doc is not None  # a unit's configuration file always carries the document
    store = Store(Path(cfg.config_dir) / "config", keep=doc.sync.history)
    seed_file = store.dir / "seed"
    seed = doc.hash
    last_seed = seed_file.read_text().strip() if seed_file.exists() else ""
    if store.current is None or seed != last_seed:
        why = "first start" if store.current is None else "the file changed"
        v = store.commit(doc, who=f"file {cfg.path} ({why})", origin=cfg.role)
        log.info("configuration version %d from %s (%s)", v.record.version, cfg.path, why)
        files.write_private(seed_file, seed + "\n")
    elif store.current.document.hash != seed:
        log.info(
            "using stored configuration version %d; %s seeds only a first start or an "
            "edit of the file",
            store.current.record.version,
            cfg.path,
        )
    return store


class ConfigControl:
    def __init__(
        self,
        cfg: Config,
        store: Store,
        is_active: Callable[[], bool],
        active_address: Callable[[], str],
        on_apply: Callable[[Version], None],
        ha_state: Callable[[], str] = lambda: "unknown",
    ):
        self.cfg, self.store = cfg, store
        self.clock = time.time  # certificate dates are judged at an upload
        self.is_active, self.active_address = is_active, active_address
        self.on_apply = on_apply
        doc = current_version(store).document
        self.sync = SyncService(
            cfg.secret,
            cfg.role,
            store,
            doc.sync.port,
            partner=self.partner_address,
            preferred=lambda: current_version(self.store).document.ha.preferred,
            is_active=is_active,
            on_apply=on_apply,
            ha_state=ha_state,
            listen=self.own_addresses,
        )

    def _running(self) -> Config:
        return with_document(self.cfg, current_version(self.store).document)

    def partner_address(self) -> str:
        return str(self._running().partner_address)

    def own_addresses(self) -> list[str]:
        """Where 6973 listens: the unit's own addresses on each interface, both families (never
        a shared one, never 0.0.0.0: the shared addresses face the clients)."""
        cfg = self._running()
        return sorted({str(a) for i in cfg.interfaces for a in i.owns(cfg.role)})

    def handlers(self) -> dict:
        return {
            "config.show": self.show,
            "config.edit": self.edit,
            "config.set": self.set,
            "config.apply": self.apply,
            "config.history": self.history,
            "config.diff": self.diff,
            "config.rollback": self.rollback,
            "config.sync": self.force_sync,
            "config.applied": lambda _req: {"applied": list(self.sync.applied)},
            "config.certificates": self.certificates,
        }

    # -- reading ---------------------------------------------------------------------------
    def show(self, _req: dict) -> dict:
        v = current_version(self.store)
        return {
            "version": v.record.version,
            "hash": v.record.hash,
            "record": v.record.to_json(),
            "document": v.document.shown(),  # no private key leaves the unit this way
        }

    def certificates(self, _req: dict) -> dict:
        """The certificates' facts, days left and users (never a key)."""
        doc = current_version(self.store).document
        return {"certificates": certs.rows(doc, self.clock())}

    def history(self, _req: dict) -> dict:
        return {"history": [r.to_json() for r in self.store.history()]}

    def diff(self, req: dict) -> dict:
        def ref(name: str, default: int) -> tuple[int, str | None]:
            value = req.get(name)
            if value is None:
                return default, None
            version, _, prefix = str(value).partition(":")  # "5" or "5:1a2b3c" (a conflict)
            if not version.isdigit():
                raise invalid(
                    (name,),
                    f"VERSION or VERSION:HASH, not {value!r}",
                    headline="no such version reference:",
                )
            return int(version), prefix or None

        try:
            b, b_hash = ref("b", current_version(self.store).record.version)
            a, a_hash = ref("a", b - 1)
            try:
                old = self.store.get(a, a_hash).document if a >= 1 else None
                return {"a": a, "b": b, "diff": diff(old, self.store.get(b, b_hash).document)}
            except StoreError as e:
                raise NotFound("version", str(e)) from None
        except EditError as e:
            return e.to_json()

    # -- changing (active unit only) -------------------------------------------------------
    def _guard(self) -> None:
        if not self.is_active():
            active = self.active_address()
            raise Standby(
                f"this unit ({self.cfg.role}) is the standby; change the "
                f"configuration on the active unit at {active}",
                active,
            )

    async def _change(self, make: Callable[[Version], Document], who: str) -> dict:
        """Build the new document from the current version and store it, both on the store's
        writer (off the loop, one change at a time: none builds on a version another replaced),
        then apply it here and push it to the partner."""
        try:
            self._guard()

            def job() -> Version:
                self._guard()  # again: the unit may have become standby while we waited
                doc = make(current_version(self.store))
                try:
                    return self.store.commit(doc, who=who, origin=self.cfg.role)
                except (StoreError, OSError) as e:
                    raise Refused("", f"cannot store the new version: {e}") from None

            v = await self.sync.writer.run(job)
        except EditError as e:
            return e.to_json()
        # stored: the partner gets it whatever applying it here does, and first: a big
        # document's data planes take the loop for a while, the push needs a few of its turns
        self.sync.changed()
        await self.sync.sent(PUSH_FIRST)
        self.on_apply(v)
        return {"version": v.record.version, "hash": v.record.hash, "what": list(v.record.what)}

    async def edit(self, req: dict) -> dict:
        """config.edit: {"ops": [...], "expect_version": N or null, "who": "..."}."""
        try:
            change = Edit.from_json(req)
        except EditError as e:
            return e.to_json()

        def make(current: Version) -> Document:
            before = current.document.model_dump(mode="json")
            data = change.apply(before, current.record.version)
            return _valid(data, change.subject(before), (current.document, self.clock()))

        return await self._change(make, who=f"{req.get('who') or 'cli'}: {change.describe()}")

    async def set(self, req: dict) -> dict:
        """config.set {key, value}: one SetKey (kept for scripts and the lab)."""
        try:
            op = SetKey(str(req.get("key")), req.get("value"))
        except EditError as e:
            return e.to_json()
        return await self.edit(
            {
                "ops": [op.to_json()],
                "expect_version": req.get("expect_version"),
                "who": req.get("who"),
            }
        )

    async def apply(self, req: dict) -> dict:
        def make(current: Version) -> Document:
            data = req.get("document")
            if isinstance(data, dict) and "unit" in data:
                raise Refused(
                    "unit",
                    "the [unit] table belongs to the unit's own file; it is "
                    "not part of the synced document",
                )
            try:  # a document from `config show` keeps its certificates' stored keys
                data = with_stored_keys(data, current.document)
            except DocumentError as e:
                raise Invalid(e.problems) from None
            return _valid(data, (), (current.document, self.clock()))

        return await self._change(make, who=req.get("who") or "cli: config apply")

    async def rollback(self, req: dict) -> dict:
        version = int(req["version"])

        def make(_current: Version) -> Document:
            try:
                return self.store.get(version).document
            except StoreError as e:
                raise NotFound("version", str(e)) from None

        return await self._change(make, who=f"{req.get('who') or 'cli'}: rollback to {version}")

    async def force_sync(self, req: dict) -> dict:
        try:
            self._guard()
            return await self.sync.force()
        except EditError as e:
            return e.to_json()
        except Exception as e:  # partner down, refused: say so, never crash
            return Refused("", f"force sync failed: {e}").to_json()


def _dated(old: Document, new: Document, now: float) -> list[Problem]:
    """A certificate added or changed must be valid now (a stored one may run out: it warns)."""
    before = {c.name: c.chain for c in old.certificate}
    problems = []
    for n, cert in enumerate(new.certificate):
        if before.get(cert.name) == cert.chain:
            continue
        why = certs.dated_problem(cert.info(), now)
        if why:
            problems.append(Problem(("certificate", n, "chain"), f"{cert.name}: {why}"))
    return problems


def _valid(data, subject: Loc = (), upload: tuple[Document, float] | None = None) -> Document:
    """The new document, or Invalid with its problems placed; with upload = (the current
    document, now) the certificates it adds or changes are judged on their dates too."""
    try:
        doc = parse_document(data)
    except DocumentError as e:
        raise Invalid(e.problems, subject) from None
    problems = _dated(upload[0], doc, upload[1]) if upload else []
    if problems:
        raise Invalid(problems, subject)
    return doc
