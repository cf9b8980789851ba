"""Health checks of a big document start spread over one interval, not in one loop turn."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from carpool.config.ha import parse_config
from carpool.dataplane.health import HealthChecker
from carpool.lab.units import base_config


class Timed(HealthChecker):
    """Records when each server's first check runs (the check itself answers at once)."""

    def __init__(self) -> None:
        super().__init__(on_change=lambda key, up: None)
        self.first: dict = {}

    async def _once(self, key, check):  # type: ignore[override]
        self.first.setdefault(key, time.monotonic())
        return None


def document(servers: int):
    doc = base_config("a", Path("/tmp/cp-unit"), False, False, "none", 3)
    return parse_config(
        {
            **doc,
            "virtual_service": [
                {
                    "name": "big",
                    "address": "198.18.0.10",
                    "port": 80,
                    "check": {"interval": 0.5},
                    "real_server": [
                        {"address": f"198.18.{2 + n // 250}.{1 + n % 250}", "port": 80}
                        for n in range(servers)
                    ],
                }
            ],
        }
    ).document


def first_checks(servers: int) -> list[float]:
    async def main() -> list[float]:
        checker = Timed()
        t0 = time.monotonic()
        checker.update(document(servers))
        deadline = t0 + 3.0
        while len(checker.first) < servers and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        checker.close()
        return sorted(t - t0 for t in checker.first.values())

    return asyncio.run(main())


def test_a_few_servers_are_checked_at_once():
    times = first_checks(5)
    assert len(times) == 5 and times[-1] < 0.2


def test_many_servers_first_checks_spread_over_the_interval():
    times = first_checks(300)
    assert len(times) == 300
    assert times[-1] > 0.35  # spread out to near the 0.5 s interval
    early = [t for t in times if t < 0.1]
    assert len(early) < len(times) / 3, len(early)  # not a burst at the start
