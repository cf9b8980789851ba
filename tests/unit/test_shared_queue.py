"""The shared-address queue (node/shared.py): the loop never waits for netlink, jobs keep their
order, renewals coalesce, a stuck job does not hold the queue. The netlink work itself runs in
the lab tests; here it is replaced by recorded steps, to control its timing."""
import asyncio
import threading
import time

from carpool.node import shared as shared_mod
from carpool.node.shared import SharedAddresses


class Recorded(SharedAddresses):
    def __init__(self, gate: threading.Event | None = None):
        super().__init__()
        self.steps: list[str] = []
        self.gate = gate

    def _wait(self):
        if self.gate is not None:
            assert self.gate.wait(5)

    def _add(self, items, vmac, lifetime, announce):  # type: ignore[override]
        self._wait()
        self.steps.append(f"add {[c for _, c in items]} {lifetime} {announce}")
        return [c for _, c in items]

    def _remove(self, items, vmac):  # type: ignore[override]
        self.steps.append(f"remove {[c for _, c in items]}")

    def _garp(self, items, vmac, count):  # type: ignore[override]
        self.steps.append(f"garp {count}")


ITEMS = [("eth0", "198.18.0.10/24"), ("eth2", "198.18.2.1/24")]


def test_jobs_run_in_order_and_held_follows():
    async def main():
        q = Recorded()
        q.loop = asyncio.get_running_loop()
        q.take(ITEMS, None, 3, True)
        q.garp(ITEMS, None, 5)
        assert await q.drain(2)
        await asyncio.sleep(0)  # the done callbacks
        assert q.held == ["198.18.0.10/24", "198.18.2.1/24"]
        q.release(ITEMS, None)
        assert q.held == []     # at once: the fence is dark before release is asked
        assert await q.drain(2)
        q.close()
        return q.steps
    assert asyncio.run(main()) == [
        "add ['198.18.0.10/24', '198.18.2.1/24'] 3 True", "garp 5",
        "remove ['198.18.0.10/24', '198.18.2.1/24']"]


def test_the_loop_does_not_wait_and_renewals_coalesce():
    async def main():
        gate = threading.Event()
        q = Recorded(gate)
        q.loop = asyncio.get_running_loop()
        started = time.monotonic()
        for _ in range(5):
            q.renew(ITEMS, None, 3)
        asked_in = time.monotonic() - started
        assert q.counters["renewals_coalesced"] == 4
        gate.set()
        assert await q.drain(2)
        await asyncio.sleep(0)
        q.renew(ITEMS, None, 3)  # the first one is done: a new one runs
        assert await q.drain(2)
        q.close()
        return asked_in, q.steps
    asked_in, steps = asyncio.run(main())
    assert asked_in < 0.05
    assert steps == ["add ['198.18.0.10/24', '198.18.2.1/24'] 3 False"] * 2


def test_a_stuck_job_moves_the_queue_to_a_fresh_thread(monkeypatch, caplog):
    monkeypatch.setattr(shared_mod, "STUCK", 0.1)

    async def main():
        gate = threading.Event()
        q = Recorded(gate)
        q.loop = asyncio.get_running_loop()
        q.take(ITEMS, None, 3, True)      # blocks on the gate: stuck
        await asyncio.sleep(0.2)
        q.gate = None                     # what runs next does not block
        q.release(ITEMS, None)            # noticed here: a fresh thread takes this one
        assert await q.drain(2)
        assert q.counters["stuck"] == 1 and q.status()["queued"] == 0
        gate.set()
        q.close()
        return q.steps
    steps = asyncio.run(main())
    assert steps[0] == "remove ['198.18.0.10/24', '198.18.2.1/24']"
    assert "has not finished" in caplog.text
