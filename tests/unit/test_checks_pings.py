"""The partner's echoes ride on the advert turns; the ping targets keep a timer of their own,
and a loop without targets sleeps until a configuration brings one (no idle wake-up)."""

import asyncio

from carpool.config.ha import load_config
from carpool.node.checks import Checks
from carpool.node.paths import IfaceState

TEXT = """
[unit]
role = "first"
secret = "unit-test-secret"
state_dir = "/tmp/x"

[[interface]]
name = "eth0"
shared = ["198.18.0.10/24"]
first = "198.18.0.11"
second = "198.18.0.12"
{target}

[[interface]]
name = "eth1"
heartbeat = true
first = "198.18.1.1"
second = "198.18.1.2"
"""


class Pinger:
    """Answers in the next loop turn, as the kernel's reply comes, except the addresses in
    `silent`; records whom it asked (the echo itself runs below on loopback, and in the lab)."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.silent: set[str] = set()
        self.out: set[int] = set()

    async def ping(self, address: str, timeout: float) -> float | None:
        self.asked.append(address)
        await asyncio.sleep(0)
        return 0.001

    def echo(self, address: str, told) -> int:
        self.asked.append(address)
        seq = len(self.asked)
        self.out.add(seq)
        if address not in self.silent:
            asyncio.get_running_loop().call_soon(self._reply, seq, told)
        return seq

    def _reply(self, seq: int, told) -> None:
        if seq in self.out:
            self.out.discard(seq)
            told(0.001)

    def forget(self, seq: int) -> bool:
        if seq in self.out:
            self.out.discard(seq)
            return True
        return False


def config(tmp_path, target: str = ""):
    path = tmp_path / "carpool.toml"
    path.write_text(TEXT.format(target=target))
    return load_config(path)


def checks_for(cfg) -> Checks:
    return Checks(cfg, {i.name: IfaceState() for i in cfg.interfaces}, on_change=lambda: None)


def test_a_loop_without_targets_sleeps_until_a_configuration_brings_one(tmp_path):
    async def main():
        checks, pinger = checks_for(config(tmp_path)), Pinger()
        task = asyncio.ensure_future(checks.ping_loop(pinger))
        await asyncio.sleep(0.05)
        idle = list(pinger.asked)
        checks.configure(config(tmp_path, 'ping_target = "198.18.0.100"\nping_interval = 0.2'))
        for _ in range(100):  # bounded: the first target ping comes at once
            await asyncio.sleep(0.01)
            if pinger.asked:
                break
        task.cancel()
        return idle, pinger.asked

    idle, asked = asyncio.run(main())
    assert idle == []
    assert asked and set(asked) == {"198.18.0.100"}


def test_partner_echoes_go_on_every_interface_and_a_lost_one_shows_at_the_next_round(tmp_path):
    """A round sends one echo per interface and needs no task or timer: a reply sets the path's
    status as it comes; an echo still unanswered when the next round goes out was lost."""

    async def main():
        checks, pinger = checks_for(config(tmp_path)), Pinger()
        checks.echo_partner(pinger)
        await asyncio.sleep(0)
        first = list(pinger.asked)
        answered = {n: (p.ping_ok, p.ping_rtt) for n, p in checks.paths.items()}
        pinger.silent.add("198.18.1.2")  # the partner stops answering on eth1
        checks.echo_partner(pinger)
        await asyncio.sleep(0)
        still = checks.paths["eth1"].ping_ok  # not known lost before the next round
        checks.echo_partner(pinger)
        await asyncio.sleep(0)
        return first, answered, still, checks.paths, pinger

    first, answered, still, paths, pinger = asyncio.run(main())
    assert first == ["198.18.0.12", "198.18.1.2"]  # the partner's (we are the first unit)
    assert answered == {"eth0": (True, 0.001), "eth1": (True, 0.001)}
    assert still is True
    assert paths["eth0"].ping_ok and not paths["eth1"].ping_ok and paths["eth1"].ping_rtt is None
    assert len(pinger.asked) == 6 and len(pinger.out) == 1  # the last round's eth1 echo


def test_an_echo_tells_its_rtt_without_a_task_and_forget_stops_waiting():
    """The real Pinger on loopback (root: a raw ICMP socket): echo() is answered through the
    loop's reader; forget() says whether the reply was still missing; ping() still works."""
    from carpool.node.icmp import Pinger as RealPinger

    async def main():
        pinger = RealPinger()
        heard: list[float] = []
        try:
            seq = pinger.echo("127.0.0.1", heard.append)
            for _ in range(200):  # bounded: loopback answers within a turn or two
                if heard:
                    break
                await asyncio.sleep(0.005)
            after_reply = pinger.forget(seq) if seq is not None else None
            # forgotten before the loop reads its reply: the reply then tells nobody
            quiet = pinger.echo("127.0.0.2", lambda rtt: heard.append(-1.0))
            before_reply = pinger.forget(quiet) if quiet is not None else None
            await asyncio.sleep(0.05)
            rtt = await pinger.ping("127.0.0.1", 1.0)
            return seq, heard, after_reply, before_reply, rtt
        finally:
            pinger.close()

    seq, heard, after_reply, before_reply, rtt = asyncio.run(main())
    assert seq is not None and len(heard) == 1 and 0 <= heard[0] < 1.0
    assert after_reply is False  # the reply had come
    assert before_reply is True  # forgotten first: its reply, when it came, told nobody
    assert rtt is not None and 0 <= rtt < 1.0
