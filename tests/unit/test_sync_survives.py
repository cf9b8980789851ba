"""No malformed input ends a 6973 task: the active unit's client loop, the relay's connection
and the server keep going (real asyncio code against a fake partner on 127.0.0.1), and what
they log about it cannot flood."""

from __future__ import annotations

import asyncio
import logging
import struct
import threading
from collections.abc import Awaitable, Callable

import pytest
from edits import DOC

from carpool.config import syncproto as sp
from carpool.config.document import parse_document
from carpool.config.store import Store
from carpool.node import relay as relay_mod
from carpool.node import sync as sync_mod
from carpool.node.relay import AdvertRelay
from carpool.node.sync import SyncService, SyncState

SECRET = b"lab-secret"
DEEP = b"[" * 5000 + b"]" * 5000


def store(path) -> Store:
    s = Store(path)
    s.commit(parse_document(DOC), who="test")
    return s


def service(path, role: str, port: int = 0) -> SyncService:
    return SyncService(
        SECRET,
        role,
        store(path),
        port,
        partner=lambda: "127.0.0.1",
        preferred=lambda: "none",
        is_active=lambda: True,
        on_apply=lambda _v: None,
    )


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    (n,) = struct.unpack("!I", await reader.readexactly(4))
    return await reader.readexactly(n)


def raw(body: bytes) -> Callable[..., Awaitable[None]]:
    """A partner that answers the hello with `body`, framed, and nothing else."""

    async def serve(reader, writer, _partner) -> None:
        await read_frame(reader)
        writer.write(struct.pack("!I", len(body)) + body)
        await writer.drain()
        await asyncio.sleep(0.05)

    return serve


def answering(reply: dict | bytes) -> Callable[..., Awaitable[None]]:
    """The real partner, authenticated, that answers the first message after the handshake
    with `reply` (a dict sealed as it is; bytes sealed raw)."""

    async def serve(reader, writer, partner: SyncService) -> None:
        ch = sync_mod.Channel(reader, writer)
        await partner._accept(ch)
        await ch.recv()
        session = ch.session
        assert session is not None
        if isinstance(reply, bytes):
            writer.write(session.seal_raw(reply))
        else:
            writer.write(session.seal(reply))
        await writer.drain()
        await asyncio.sleep(0.05)

    return serve


BAD_PARTNERS = {
    "nested challenge": raw(DEEP),
    "nested in an object": raw(b'{"type":"challenge","nonce":' + DEEP + b"}"),
    "a list": raw(b"[1,2,3]"),
    "a huge number": raw(b'{"type":"challenge","nonce":"n","proof":' + b"9" * 4400 + b"}"),
    "NaN": raw(b'{"type":"challenge","nonce":"n","proof":NaN}'),
    "not UTF-8": raw(b'{"type":"challenge","nonce":"\xff"}'),
    "nonce of the wrong type": raw(b'{"type":"challenge","nonce":["x"]}'),
    "nested sealed state": answering(b'{"type":"state","history":' + DEEP + b"}"),
    "empty key in the history": answering({"type": "state", "history": [[]], "current": None}),
    "history not a list": answering({"type": "state", "history": 5}),
    "unhashable key": answering({"type": "state", "history": [[1, [2]]], "current": None}),
    "no history": answering({"type": "state"}),
    "current of the wrong type": answering({"type": "state", "history": [], "current": 7}),
    "history of strings": answering({"type": "state", "history": ["ab"], "current": "ab"}),
}


async def until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def against(tmp_path, bad, body: Callable[[SyncService, dict], Awaitable[None]]) -> None:
    """A fake partner on 127.0.0.1 that misbehaves while mode["bad"], then is the real one."""
    partner = service(tmp_path / "partner", "second")
    # the real partner takes "relay" messages: the relay's connection to it stays (without,
    # it would last one round trip, too short to be seen by a poll on a fast machine)
    AdvertRelay(partner, lambda *a: None, lambda: "master", lambda: None)
    mode = {"bad": True, "connections": 0}

    async def handler(reader, writer) -> None:
        mode["connections"] += 1
        try:
            if mode["bad"]:
                await bad(reader, writer, partner)
            else:
                await partner._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = service(tmp_path / "client", "first", port)
    try:
        await body(client, mode)
    finally:
        server.close()


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch):
    monkeypatch.setattr(sync_mod, "RETRY", 0.02)
    monkeypatch.setattr(relay_mod, "RETRY", 0.02)


@pytest.mark.parametrize("bad", BAD_PARTNERS.values(), ids=BAD_PARTNERS.keys())
def test_the_client_loop_survives_a_bad_partner_and_syncs_with_a_good_one(tmp_path, bad):
    async def body(client: SyncService, mode: dict) -> None:
        task = asyncio.create_task(client._client_loop())
        await until(lambda: client.counters["failures"] >= 3 or task.done())
        assert not task.done(), task.exception()
        assert client.state is not SyncState.IN_SYNC and client.last_error
        mode["bad"] = False
        await until(lambda: client.state is SyncState.IN_SYNC or task.done())
        assert not task.done(), task.exception()
        task.cancel()

    asyncio.run(against(tmp_path, bad, body))


@pytest.mark.parametrize("bad", list(BAD_PARTNERS.values())[:7], ids=list(BAD_PARTNERS)[:7])
def test_the_relay_connection_survives_a_bad_partner(tmp_path, bad):
    async def body(client: SyncService, mode: dict) -> None:
        relay = AdvertRelay(client, lambda *a: None, lambda: "backup", lambda: None)
        task = asyncio.create_task(relay.run())
        await until(lambda: relay.counters["disconnects"] >= 3 or task.done())
        assert not task.done(), task.exception()
        mode["bad"] = False
        await until(lambda: relay.client is not None or task.done())
        assert not task.done(), task.exception()
        task.cancel()

    asyncio.run(against(tmp_path, bad, body))


def test_the_relay_survives_a_failing_report_callback(tmp_path):
    async def body(client: SyncService, mode: dict) -> None:
        relay = AdvertRelay(client, lambda *a: None, lambda: "backup", lambda: None)
        relay.on_report = lambda _report: 1 / 0  # a doctor bug
        task = asyncio.create_task(relay.run())
        await until(lambda: relay.counters["internal_error"] >= 2 or task.done())
        assert not task.done(), task.exception()
        task.cancel()

    bad = answering({"type": "doctor-report", "report": {}})  # answers the relay's ask
    asyncio.run(against(tmp_path, bad, body))


def test_the_server_survives_garbage_and_logs_it_rate_limited(tmp_path, caplog):
    async def main() -> None:
        partner = service(tmp_path / "partner", "second")
        server = await asyncio.start_server(partner._serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        for body in [DEEP, b"[1]", b"\xff", b'{"type":"hello","nonce":' + DEEP + b"}"] * 10:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(sp.frame(body))
            await writer.drain()
            assert await reader.read() == b""  # closed by the server
            writer.close()
        client = service(tmp_path / "client", "first", port)
        ch = await client._connect()  # still serving
        ch.close()
        server.close()
        return partner

    with caplog.at_level(logging.INFO, logger="carpool.sync"):
        partner = asyncio.run(main())
    assert sum(n for k, n in partner.counters.items() if k.startswith("bad_frame_")) == 40
    assert partner.counters["errors"] == 0
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) <= 4
    assert not [r for r in caplog.records if r.exc_info]


def test_before_authentication_only_small_frames_are_read(tmp_path):
    async def main() -> SyncService:
        partner = service(tmp_path / "partner", "second")
        server = await asyncio.start_server(partner._serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(struct.pack("!I", 1 << 20))  # a 1 MiB hello announced: refused at once
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
        client = service(tmp_path / "client", "first", port)
        ch = await client._connect()  # after the handshake, big frames are fine
        await ch.send({"type": "state", "pad": "x" * (1 << 20)})
        assert (await ch.recv())["type"] == "state"
        ch.close()
        server.close()
        return partner

    partner = asyncio.run(main())
    assert partner.counters["bad_frame_oversized"] == 1


# -- the handshake: roles, protocol, pace, how many at once -----------------------------------
async def serving(partner: SyncService):
    server = await asyncio.start_server(partner._serve, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def test_a_reflected_handshake_proves_nothing(tmp_path):
    """The finding: a unit's own client proof, reflected at its own server, authenticated.
    Each side now checks the other claims the partner's role, and the proofs bind both."""

    async def main() -> tuple[str, SyncService]:
        unit = service(tmp_path / "self", "first")
        server, port = await serving(unit)
        unit.port = port
        try:  # the unit connecting to itself: what a reflecting attacker makes of it
            await unit._connect()
        except sync_mod.SyncRefused as e:
            return str(e), unit
        finally:
            server.close()
        raise AssertionError("a unit authenticated with itself")

    why, unit = asyncio.run(main())
    assert "not our partner" in why and unit.counters["wrong_role"] == 1
    assert unit.counters["refused_by_partner"] == 1  # its server refused the hello too


def test_an_older_partner_is_told_why_and_we_say_it(tmp_path):
    async def main() -> tuple[dict, SyncService]:
        partner = service(tmp_path / "partner", "second")
        server, port = await serving(partner)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        hello = {"type": "hello", "proto": 1, "role": "first", "nonce": "n" * 32}
        writer.write(sp.frame(sp.dumps(hello)))  # what the release before this one sends
        await writer.drain()
        answer = sp.parse_json(await read_frame(reader))
        writer.close()
        server.close()
        return answer, partner

    answer, partner = asyncio.run(main())
    assert answer["type"] == "error" and "sync protocol 1" in answer["error"]
    assert "same release" in answer["error"] and partner.counters["old_protocol"] == 1


def test_the_whole_handshake_has_one_deadline(tmp_path, monkeypatch):
    monkeypatch.setattr(sync_mod, "HANDSHAKE_TIMEOUT", 0.5)

    async def main() -> tuple[float, SyncService]:
        partner = service(tmp_path / "partner", "second")
        server, port = await serving(partner)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        hello = sp.frame(
            sp.dumps({"type": "hello", "proto": 2, "role": "first", "nonce": "n" * 32})
        )
        start = asyncio.get_running_loop().time()
        for byte in hello:  # one byte every 0.1 s: each read is quick, the whole is not
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.1)
            if reader.at_eof() or writer.is_closing():
                break
            try:
                if await asyncio.wait_for(reader.read(1 << 16), 0.001) == b"":
                    break
            except TimeoutError:
                pass
        elapsed = asyncio.get_running_loop().time() - start
        writer.close()
        server.close()
        return elapsed, partner

    elapsed, partner = asyncio.run(main())
    assert elapsed < 2.0 and partner.counters["handshake_timeout"] == 1


def test_connections_in_their_handshake_are_capped_and_the_partner_still_gets_in(tmp_path):
    async def main() -> SyncService:
        partner = service(tmp_path / "partner", "second")
        server, port = await serving(partner)
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(40)]
        await until(lambda: partner.counters["refused_busy"] >= 40 - sync_mod.MAX_UNAUTHENTICATED)
        for _, writer in idle:
            writer.close()
        await until(lambda: partner._unauthenticated == 0)
        client = service(tmp_path / "client", "first", port)
        ch = await client._connect()
        ch.close()
        server.close()
        return partner

    partner = asyncio.run(main())
    assert partner.counters["refused_busy"] == 40 - sync_mod.MAX_UNAUTHENTICATED


def test_a_pushed_document_is_validated_off_the_event_loop(tmp_path, monkeypatch):
    """Validating a big document takes a while (10,000 services: 0.15 s): not on the loop
    that keeps the advert timers."""
    threads = []
    parse = sync_mod._parse_versions

    def recording(items):
        threads.append(threading.current_thread() is threading.main_thread())
        return parse(items)

    monkeypatch.setattr(sync_mod, "_parse_versions", recording)
    partner = service(tmp_path / "partner", "second")
    asyncio.run(partner._receive({"versions": [], "lost": []}))
    assert threads == [False]
