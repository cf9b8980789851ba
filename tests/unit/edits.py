"""A unit's configuration side without a network: a real store and ConfigControl (the daemon's
config.* handlers), for the tests of edits from the CLI, the REST API and the WUI."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from carpool.config.document import parse_document
from carpool.config.store import Store
from carpool.dataplane.stats import Stats
from carpool.node.configd import ConfigControl
from carpool.node.view import UnitView

DOC = {
    "interface": [
        {
            "name": "eth0",
            "first": "198.18.0.11",
            "second": "198.18.0.12",
            "shared": ["198.18.0.10/24"],
        }
    ],
    "virtual_service": [
        {
            "name": "web",
            "address": "198.18.0.10",
            "port": 80,
            "real_server": [{"address": "198.18.2.101", "port": 80}],
        }
    ],
}


class Unit:
    """config.* handlers of one unit; `active` flips it to the standby."""

    def __init__(self, path, doc: dict = DOC):
        self.active = True
        self.stats = Stats()  # the traffic statistics' rings, filled by a test
        self.store = Store(path)
        self.store.commit(parse_document(doc), who="test")
        self.cfg = SimpleNamespace(secret=b"unit-test-secret", role="first")
        self.config = ConfigControl(
            self.cfg, self.store, lambda: self.active, lambda: "198.18.0.12", lambda _v: None
        )

    def call(self, command: str, **request) -> dict:
        """As the control socket calls a handler (a fresh loop per request, like a CLI run)."""
        handlers = {
            "status": lambda _r: {"sync": {}, "dataplane": {"servers": []}},
            **self.config.handlers(),
        }

        async def one():
            result = handlers[command](request)
            return await result if asyncio.iscoroutine(result) else result

        return asyncio.run(one())

    @property
    def document(self) -> dict:
        return self.store.current.document.model_dump(mode="json")

    @property
    def version(self) -> int:
        return self.store.current.record.version


def unit_view(unit: Unit, **overrides) -> UnitView:
    """The view the web layer gets of the unit (node/view.py), around a real store and the
    daemon's config handlers; what these tests do not reach is refused loudly (`overrides`
    replace any of its parts)."""
    cfg = SimpleNamespace(
        role="first",
        secret=b"unit-test-secret",
        web=SimpleNamespace(port=443),
        web_bind="198.18.0.11",
        partner_url="https://198.18.0.12/",
        initial_wait=0.0,
    )
    config = unit.config

    def status(_request: dict | None = None) -> dict:
        return {"role": "first", "state": "master" if unit.active else "backup"}

    def unused(*_args):
        raise AssertionError("not part of these tests")

    parts = dict(
        config=lambda: cfg,
        status=status,
        ha_state=lambda: "master" if unit.active else "backup",
        version=lambda: config.store.current.record.key,
        document=lambda: config.store.current.document,
        handlers=lambda: {"status": status, **config.handlers()},
        failover=unused,
        doctor=unused,
        servers=lambda: [],
        dataplane_counters=unused,
        stats=lambda: unit.stats,
        paths=unused,
        advert_paths=unused,
        now=unused,
        held=unused,
        is_partner=unused,
        send_probe=unused,
        partner_ha=unused,
        sync_port=unused,
        probe_sync=unused,
        ask_doctor=unused,
    )
    return UnitView(**{**parts, **overrides})
