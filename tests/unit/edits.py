"""A unit's configuration side without a network: a real store and ConfigControl (the daemon's
config.* handlers), for the tests of edits from the CLI, the REST API and the WUI."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from carpool.config.document import parse_document
from carpool.config.store import Store
from carpool.node.configd import ConfigControl

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
