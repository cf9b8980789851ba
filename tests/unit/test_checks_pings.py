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
    """Answers at once (the echo itself runs in the lab tests), recording whom it asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def ping(self, address: str, timeout: float) -> float | None:
        self.asked.append(address)
        await asyncio.sleep(0)
        return 0.001


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


def test_partner_echoes_go_on_every_interface_and_a_round_is_never_doubled(tmp_path):
    async def main():
        checks, pinger = checks_for(config(tmp_path)), Pinger()
        checks.echo_partner(pinger)
        checks.echo_partner(pinger)  # the first round still runs: not doubled
        await asyncio.sleep(0.01)
        first = list(pinger.asked)
        checks.echo_partner(pinger)
        await asyncio.sleep(0.01)
        return first, pinger.asked, checks.paths

    first, asked, paths = asyncio.run(main())
    assert first == ["198.18.0.12", "198.18.1.2"]  # the partner's (we are the first unit)
    assert asked == first * 2
    assert all(p.ping_ok for p in paths.values())
