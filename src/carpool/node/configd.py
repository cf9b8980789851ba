"""The daemon's configuration side: the store, the control commands (`carpool config ...`) and
the sync service. Changes are accepted on the active unit only; each becomes a version, is
applied, then pushed to the partner at once."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

from ..config.document import Document, DocumentError, parse_document
from ..config.ha import Config, with_document
from ..config.store import Store, StoreError, Version, diff
from .sync import SyncService
from .. import events

log = events.logger("carpool.config", events.Kind.CONFIG)
_INDEX = re.compile(r"^(\w+)\[(.+)\]$")


class Refused(Exception):
    pass


def open_store(cfg: Config) -> Store:
    """The unit's store, seeded from the configuration file: on first start, and whenever the
    file's document changed since it was last seeded (an admin edited it)."""
    store = Store(Path(cfg.config_dir) / "config", keep=cfg.document.sync.history)
    seed_file = store.dir / "seed"
    seed = cfg.document.hash
    last_seed = seed_file.read_text().strip() if seed_file.exists() else ""
    if store.current is None or seed != last_seed:
        why = "first start" if store.current is None else "the file changed"
        v = store.commit(cfg.document, who=f"file {cfg.path} ({why})", origin=cfg.role)
        log.info("configuration version %d from %s (%s)", v.record.version, cfg.path, why)
        seed_file.write_text(seed + "\n")
    elif store.current.document.hash != seed:
        log.info("using stored configuration version %d; %s seeds only a first start or an "
                 "edit of the file", store.current.record.version, cfg.path)
    return store


def set_key(data: dict, key: str, value: Any) -> dict:
    """data with the dotted key set: `appliance.description`, `ha.vhid`,
    `interface[eth0].ping_target` / `interface[0].check` (list items by name or index)."""
    node: Any = data
    parts = key.split(".")
    for n, part in enumerate(parts):
        last = n == len(parts) - 1
        m = _INDEX.match(part)
        if m:
            items = node.setdefault(m[1], [])
            if not isinstance(items, list):
                raise Refused(f"{key}: {m[1]} is not a list")
            found = [i for i in items if isinstance(i, dict) and i.get("name") == m[2]]
            if not found and m[2].isdigit() and int(m[2]) < len(items):
                found = [items[int(m[2])]]
            if not found:
                raise Refused(f"{key}: no {m[1]} named or numbered {m[2]!r}")
            if last:
                raise Refused(f"{key}: set a key inside {part}, not the whole item")
            node = found[0]
            continue
        if not isinstance(node, dict):
            raise Refused(f"{key}: {part} is inside a value, not a table")
        if last:
            if value is None:
                node.pop(part, None)
            else:
                node[part] = value
        else:
            node = node.setdefault(part, {})
    return data


class ConfigControl:
    def __init__(self, cfg: Config, store: Store, is_active: Callable[[], bool],
                 active_address: Callable[[], str], on_apply: Callable[[Version], None],
                 ha_state: Callable[[], str] = lambda: "unknown"):
        self.cfg, self.store = cfg, store
        self.is_active, self.active_address = is_active, active_address
        self.on_apply = on_apply
        doc = store.current.document
        self.sync = SyncService(cfg.secret, cfg.role, store, doc.sync.port,
                                partner=self.partner_address,
                                preferred=lambda: self.store.current.document.ha.preferred,
                                is_active=is_active, on_apply=on_apply, ha_state=ha_state)

    def partner_address(self) -> str:
        return str(with_document(self.cfg, self.store.current.document).partner_address)

    def handlers(self) -> dict:
        return {"config.show": self.show, "config.set": self.set, "config.apply": self.apply,
                "config.history": self.history, "config.diff": self.diff,
                "config.rollback": self.rollback, "config.sync": self.force_sync,
                "config.applied": lambda _req: {"applied": list(self.sync.applied)}}

    # -- reading ---------------------------------------------------------------------------
    def show(self, _req: dict) -> dict:
        v = self.store.current
        return {"version": v.record.version, "hash": v.record.hash,
                "record": v.record.to_json(), "document": v.document.model_dump(mode="json")}

    def history(self, _req: dict) -> dict:
        return {"history": [r.to_json() for r in self.store.history()]}

    def diff(self, req: dict) -> dict:
        def ref(value, default: int) -> tuple[int, str | None]:
            if value is None:
                return default, None
            version, _, prefix = str(value).partition(":")  # "5" or "5:1a2b3c" (a conflict)
            return int(version), prefix or None
        try:
            b, b_hash = ref(req.get("b"), self.store.current.record.version)
            a, a_hash = ref(req.get("a"), b - 1)
            old = self.store.get(a, a_hash).document if a >= 1 else None
            return {"a": a, "b": b, "diff": diff(old, self.store.get(b, b_hash).document)}
        except (StoreError, ValueError, TypeError) as e:
            return {"error": str(e)}

    # -- changing (active unit only) -------------------------------------------------------
    def _guard(self) -> None:
        if not self.is_active():
            raise Refused(f"this unit ({self.cfg.role}) is the standby; change the "
                          f"configuration on the active unit at {self.active_address()}")

    async def _change(self, make: Callable[[], Document], who: str) -> dict:
        """Build the new document from the current one and store it, both on the store's
        writer (off the loop, one change at a time: none builds on a version another replaced),
        then apply it here and push it to the partner."""
        try:
            self._guard()

            def job() -> Version:
                self._guard()  # again: the unit may have become standby while we waited
                return self.store.commit(make(), who=who, origin=self.cfg.role)
            v = await self.sync.writer.run(job)
        except Refused as e:
            return {"error": str(e)}
        except DocumentError as e:
            return {"error": "invalid configuration, nothing changed:\n" + str(e)}
        except (StoreError, OSError) as e:
            return {"error": f"cannot store the new version: {e}"}
        try:
            self.on_apply(v)
        finally:
            self.sync.changed()  # stored: the partner gets it whatever applying it here did
        return {"version": v.record.version, "hash": v.record.hash, "what": list(v.record.what)}

    async def set(self, req: dict) -> dict:
        def make() -> Document:
            data = self.store.current.document.model_dump(mode="json")
            return parse_document(set_key(data, str(req["key"]), req.get("value")))
        return await self._change(make, who=req.get("who") or "cli: config set")

    async def apply(self, req: dict) -> dict:
        def make() -> Document:
            data = req.get("document")
            if isinstance(data, dict) and "unit" in data:
                raise Refused("the [unit] table belongs to the unit's own file; it is not "
                              "part of the synced document")
            return parse_document(data)
        return await self._change(make, who=req.get("who") or "cli: config apply")

    async def rollback(self, req: dict) -> dict:
        version = int(req["version"])

        def make() -> Document:
            return self.store.get(version).document
        return await self._change(make, who=f"{req.get('who') or 'cli'}: rollback to {version}")

    async def force_sync(self, req: dict) -> dict:
        try:
            self._guard()
            return await self.sync.force()
        except Refused as e:
            return {"error": str(e)}
        except Exception as e:  # partner down, refused: say so, never crash
            return {"error": f"force sync failed: {e}"}
