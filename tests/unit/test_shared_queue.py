"""The shared-address queue (node/shared.py): the loop never waits for netlink, jobs keep their
order, renewals coalesce, a stuck job does not hold the queue and can never act after a newer
one. The netlink work itself runs in the lab tests; here it is replaced by recorded steps, to
control its timing."""

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

    def _add(self, live, items, vmac, lifetime, announce):  # type: ignore[override]
        gate = self.gate
        if gate is not None:
            assert gate.wait(5)
        if not live():  # as the real one: checked before each netlink request
            self.steps.append("abandoned add")
            return []
        self.steps.append(
            f"add {[c for _, c in items]} {lifetime}"
            + (f" announce {announce}" if announce else "")
        )
        return [c for _, c in items]

    def _take(self, live, items, vmac, lifetime, announce):  # type: ignore[override]
        return self._add(live, items, vmac, lifetime, announce)  # (never the host's netlink)

    def _renew(self, live, items, vmac, lifetime, announce):  # type: ignore[override]
        return self._add(live, items, vmac, lifetime, announce)

    def _remove(self, live, items, vmac, local=(), lifetime=0):  # type: ignore[override]
        kept = f" (first {list(local)} on lo for {lifetime} s)" if local else ""
        self.steps.append(f"remove {[c for _, c in items]}{kept}")

    def _unlocal(self, live, local):  # type: ignore[override]
        self.steps.append(f"off lo {local}")

    def _garp(self, live, items, vmac, count):  # type: ignore[override]
        self.steps.append(f"garp {count}")


ITEMS = [("eth0", "198.18.0.10/24"), ("eth2", "198.18.2.1/24")]
CIDRS = ["198.18.0.10/24", "198.18.2.1/24"]


async def settled(q: SharedAddresses) -> None:
    assert await q.drain(2)
    await asyncio.sleep(0.01)  # the done callbacks


async def until(condition, timeout: float = 5.0, what: str = "condition") -> None:
    """Poll (without blocking the loop) until condition() holds; fail after the deadline."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:g} s"
        await asyncio.sleep(0.005)


def running_for(q: SharedAddresses, seconds: float) -> bool:
    """The netlink thread has been on its current job for more than `seconds`."""
    running = q.status()["running"]
    return running is not None and running["for_s"] > seconds


def test_jobs_run_in_order_and_held_follows():
    async def main():
        q = Recorded()
        q.loop = asyncio.get_running_loop()
        q.take(ITEMS, None, 3)
        q.garp(ITEMS, None, 5)
        await settled(q)
        assert q.held == CIDRS and not q.wedged(0)
        q.release(ITEMS, None)
        assert q.held == []  # at once: the fence is dark before release is asked
        await settled(q)
        q.take(ITEMS, None, 3)
        q.release(ITEMS, None, ["198.18.0.10/32"], 11)  # a planned failover's handover
        q.unlocal(["198.18.0.10/32"])
        await settled(q)
        q.close()
        return q.steps

    assert asyncio.run(main()) == [
        f"add {CIDRS} 3",
        "garp 5",
        f"remove {CIDRS}",
        f"add {CIDRS} 3",
        f"remove {CIDRS} (first ['198.18.0.10/32'] on lo for 11 s)",
        "off lo ['198.18.0.10/32']",
    ]


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
        await settled(q)
        q.renew(ITEMS, None, 3)  # the first one is done: a new one runs
        await settled(q)
        q.close()
        return asked_in, q.steps

    asked_in, steps = asyncio.run(main())
    assert asked_in < 0.05
    assert steps == [f"add {CIDRS} 3"] * 2


def test_a_renewal_that_changes_nothing_does_not_wake_the_loop():
    """The active unit renews each second; told through the loop, each renewal cost the idle
    loop a wake-up. One that adds nothing to held is taken in at the queue's next use."""

    async def main():
        q = Recorded()
        loop = q.loop = asyncio.get_running_loop()
        q.take(ITEMS, None, 3)
        await settled(q)
        woken: list[str] = []
        real = loop.call_soon_threadsafe

        def spy(fn, *args):
            woken.append(getattr(fn, "__name__", repr(fn)))
            return real(fn, *args)

        loop.call_soon_threadsafe = spy  # type: ignore[method-assign]
        q.renew(ITEMS, None, 3)
        await until(lambda: q._quiet, what="the renewal done")
        assert q.status()["queued"] == 0  # taken in by the next use
        assert not q.wedged(0) and not q._renewing
        q.renew(ITEMS, None, 3)  # not coalesced into the finished one
        await until(lambda: q._quiet, what="the second renewal done")
        loop.call_soon_threadsafe = real  # type: ignore[method-assign]
        q.close()
        return woken, q.steps, q.counters["renewals_coalesced"]

    woken, steps, coalesced = asyncio.run(main())
    assert woken == [] and coalesced == 0
    assert steps == [f"add {CIDRS} 3"] * 3


def test_a_renewal_that_puts_an_address_back_is_told_at_once():
    async def main():
        q = Recorded()
        q.loop = asyncio.get_running_loop()
        q.renew(ITEMS, None, 3)  # (held is empty: the renewal adds both)
        await until(lambda: q.held == CIDRS, what="held filled by the loop's callback")
        q.close()
        return q

    assert not asyncio.run(main())._quiet


def test_a_renewal_finishing_after_a_release_does_not_refill_held():
    async def main():
        gate = threading.Event()
        q = Recorded(gate)
        q.loop = asyncio.get_running_loop()
        q.renew(ITEMS, None, 3)
        await until(lambda: q.status()["running"] is not None, what="the renewal running")
        q.release(ITEMS, None)
        gate.set()
        await settled(q)
        q.close()
        return q

    q = asyncio.run(main())
    assert q.steps == [f"add {CIDRS} 3", f"remove {CIDRS}"]
    assert q.held == []


def test_wedged_once_no_renewal_finishes_within_the_limit():
    async def main():
        gate = threading.Event()
        q = Recorded(gate)
        q.loop = asyncio.get_running_loop()
        q.renew(ITEMS, None, 3)
        await asyncio.sleep(0.15)
        wedged = q.wedged(0.1)
        gate.set()
        await settled(q)
        q.close()
        return wedged, q.wedged(0.1)

    assert asyncio.run(main()) == (True, False)


def test_a_stuck_job_moves_the_queue_and_never_acts_after_it(monkeypatch, caplog):
    monkeypatch.setattr(shared_mod, "STUCK", 0.1)

    async def main():
        gate = threading.Event()
        q = Recorded(gate)
        q.loop = asyncio.get_running_loop()
        q.take(ITEMS, None, 3)  # blocks on the gate: stuck
        q.garp(ITEMS, None, 5)  # waits behind it
        await until(lambda: running_for(q, shared_mod.STUCK), what="the take stuck")
        q.gate = None  # what runs next does not block
        q.release(ITEMS, None)  # noticed here: garp and release move, in order
        await settled(q)
        assert q.counters["stuck"] == 1 and q.status()["queued"] == 0
        gate.set()  # the abandoned take returns now
        await until(lambda: "abandoned add" in q.steps, what="the abandoned take returns")
        q.close()
        return q

    q = asyncio.run(main())
    assert q.steps == ["garp 5", f"remove {CIDRS}", "abandoned add"]
    assert q.held == []
    assert "has not finished" in caplog.text


def test_a_stuck_renewal_is_noticed_by_the_next_renewal(monkeypatch):
    monkeypatch.setattr(shared_mod, "STUCK", 0.1)

    async def main():
        gate = threading.Event()
        q = Recorded(gate)
        q.loop = asyncio.get_running_loop()
        q.renew(ITEMS, None, 3)
        await until(lambda: running_for(q, shared_mod.STUCK), what="the renewal stuck")
        q.gate = None
        q.renew(ITEMS, None, 3)  # the only thing the active unit asks, each second
        await settled(q)
        gate.set()
        await until(lambda: "abandoned add" in q.steps, what="the abandoned renewal returns")
        q.close()
        return q

    q = asyncio.run(main())
    assert q.counters["stuck"] == 1 and q.held == CIDRS
    assert q.steps == [f"add {CIDRS} 3", "abandoned add"]


def test_nothing_is_taken_after_close():
    async def main():
        q = Recorded()
        q.loop = asyncio.get_running_loop()
        q.close()
        q.take(ITEMS, None, 3)
        await asyncio.sleep(0.05)
        return q

    q = asyncio.run(main())
    assert q.steps == [] and q.status()["queued"] == 0


def test_a_take_adds_every_address_in_one_batch_then_announces_each(monkeypatch):
    """A takeover's addresses go to the kernel in one netlink batch (tens of microseconds for
    a dual-stack pair's four), then each one's gratuitous ARP/NA; a renewal is the batch
    again and announces nothing. pyroute2 is not used."""
    steps: list[str] = []
    monkeypatch.setattr(
        shared_mod.addresses,
        "add_shared",
        lambda ifname, cidr, vmac, lifetime: steps.append(f"add {cidr}"),
    )
    monkeypatch.setattr(
        shared_mod.addresses,
        "send_garp",
        lambda ifname, address, vmac, count: steps.append(f"announce {address} x{count}"),
    )

    def batch(items, lifetime):  # the raw netlink batch (never the host's addresses)
        steps.append(f"batch {[c for _, c in items]} {lifetime}")
        return [None] * len(items)

    monkeypatch.setattr(shared_mod.rtaddr, "renew_many", batch)
    monkeypatch.setattr(shared_mod.addresses, "dad_pending", lambda ifname, cidr: False)

    async def main():
        q = SharedAddresses()
        q.loop = asyncio.get_running_loop()
        q.take(ITEMS + [("eth0", "2001:2::10/64")], None, 3, announce=2)
        await settled(q)
        q.renew(ITEMS, None, 3)
        await settled(q)
        q.close()
        return q.held

    assert asyncio.run(main()) == CIDRS + ["2001:2::10/64"]
    assert steps == [
        "batch ['198.18.0.10/24', '198.18.2.1/24', '2001:2::10/64'] 3",
        "announce 198.18.0.10 x2",
        "announce 198.18.2.1 x2",
        "announce 2001:2::10 x2",
        "batch ['198.18.0.10/24', '198.18.2.1/24'] 3",
    ]


def test_announcements_asked_before_a_release_are_not_sent(monkeypatch):
    """A takeover whose job ran late, and the repeat with its second advert, must not reach
    the clients after the unit let the addresses go (the partner announced meanwhile): a
    chaos campaign saw 8 s without replies after a split healed. The announcement already on
    the wire goes; the rest of the take's, and the queued repeat, do not."""
    steps: list[str] = []
    sending, gate = threading.Event(), threading.Event()

    def send_garp(ifname, address, vmac, count):
        if not sending.is_set():
            sending.set()
            assert gate.wait(5)  # the first announcement is on the wire when the release comes
        steps.append(f"announce {address} x{count}")

    monkeypatch.setattr(shared_mod.addresses, "send_garp", send_garp)
    monkeypatch.setattr(
        shared_mod.rtaddr, "renew_many", lambda items, lifetime: [None] * len(items)
    )
    monkeypatch.setattr(shared_mod.addresses, "dad_pending", lambda ifname, cidr: False)
    monkeypatch.setattr(
        shared_mod.addresses, "withdraw", lambda ifname, cidrs: steps.append(f"withdraw {cidrs}")
    )
    monkeypatch.setattr(shared_mod.addresses, "remove_stale", lambda ifname, cidrs: None)

    async def main():
        q = SharedAddresses()
        q.loop = asyncio.get_running_loop()
        q.take(ITEMS, None, 3, announce=2)
        await until(sending.is_set, what="the first announcement sending")
        q.garp(ITEMS, None, 2)  # the repeat with the second advert
        q.release(ITEMS, None)
        gate.set()
        await settled(q)
        q.take(ITEMS, None, 3, announce=1)  # a later takeover announces as usual
        await settled(q)
        q.close()
        return q.counters.get("announcements_withdrawn")

    withdrawn = asyncio.run(main())
    assert steps == [
        "announce 198.18.0.10 x2",
        "withdraw ['198.18.0.10/24']",
        "withdraw ['198.18.2.1/24']",
        "announce 198.18.0.10 x1",
        "announce 198.18.2.1 x1",
    ]
    assert withdrawn == 2  # the take's second address, and the repeat
