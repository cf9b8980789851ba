"""The control socket checks who connects (SO_PEERCRED): root, or a member of `unit.control_group`;
anyone else gets one JSON error line, the connection closes, and the refusal is counted (and
logged, at most once per LOG_EVERY seconds). Real sockets; a non-root peer is a forked child that
drops to nobody (65534) before it connects."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import socket
import stat
import tempfile
from pathlib import Path

import pytest

from carpool.node import control

NOBODY = 65534
GROUP = 4242  # a gid of nobody's: a number is enough, no /etc/group entry needed
STATUS = b'{"command": "status"}\n'


@pytest.fixture
def sock_path():
    """A socket path a non-root child can reach (tmp_path's parents are 0700)."""
    d = tempfile.mkdtemp(prefix="cp-control-", dir="/tmp")
    os.chmod(d, 0o711)
    yield str(Path(d) / "carpool.sock")
    shutil.rmtree(d)


def _client(path: str, uid: int, gid: int, groups: tuple[int, ...], request: bytes) -> bytes:
    """In the child: drop to uid/gid/groups, connect, send, read until the server closes."""
    try:
        os.setgroups(list(groups))
        os.setgid(gid)
        os.setuid(uid)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(path)
            s.sendall(request)
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        return b"OK " + data
    except OSError as e:
        return f"ERR {type(e).__name__}".encode()


async def ask_as(path: str, uid: int = 0, gid: int = 0, groups=(), request=STATUS) -> bytes:
    """Fork a child that asks as uid/gid/groups; b"OK <all it read>" or b"ERR <exception>".
    The child always exits (os._exit in finally; SIGKILLed after 10 s), and is reaped."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no asyncio, no pytest, never returns
        try:
            os.close(r)
            os.write(w, _client(path, uid, gid, tuple(groups), request))
        finally:
            os._exit(0)
    os.close(w)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    try:
        while os.waitpid(pid, os.WNOHANG) == (0, 0):  # the server answers meanwhile
            if loop.time() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise AssertionError("the client child hung")
            await asyncio.sleep(0.01)
        return os.read(r, 1 << 16)
    finally:
        os.close(r)


def run(path: str, clients, handler_calls: list, **serve_args):
    """Serve `path` (status handler counting its calls), run `clients(path)`, close."""

    async def main():
        def status(_request):
            handler_calls.append(1)
            return {"state": "master"}

        server = await control.serve(path, {"status": status}, **serve_args)
        try:
            return await clients(path)
        finally:
            server.close()
            await server.wait_closed()

    return asyncio.run(main())


def lines(answer: bytes) -> list[dict]:
    assert answer.startswith(b"OK "), answer
    return [json.loads(line) for line in answer[3:].splitlines()]


def test_root_gets_its_answer(sock_path):
    calls: list = []
    answer = run(sock_path, lambda p: ask_as(p), calls)
    assert lines(answer) == [{"state": "master"}] and calls == [1]
    assert stat.S_IMODE(os.stat(sock_path).st_mode) == 0o600


def test_nobody_gets_one_error_line_and_the_connection_closes(sock_path):
    """Even when the socket's mode would let anyone connect: SO_PEERCRED decides."""
    calls: list = []

    async def clients(path):
        os.chmod(path, 0o666)
        return await ask_as(path, NOBODY, NOBODY)

    [answer] = lines(run(sock_path, clients, calls))
    assert "error" in answer and "root" in answer["error"]
    assert calls == []  # the request was never read, nor handled


def test_control_group_members_by_supplementary_or_primary_group(sock_path):
    from carpool.node.control import Access

    calls: list = []
    access = Access(GROUP, "ops")

    async def clients(path):
        st = os.stat(path)
        assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o660, GROUP)
        return [
            await ask_as(path, NOBODY, NOBODY, [GROUP]),  # a supplementary group
            await ask_as(path, NOBODY, GROUP),  # the primary group
            await ask_as(path, NOBODY, NOBODY),  # not a member: the file mode stops it
        ]

    member, primary, other = run(sock_path, clients, calls, access=access)
    assert lines(member) == lines(primary) == [{"state": "master"}] and calls == [1, 1]
    assert other == b"ERR PermissionError"
    assert access.refused == 0


def test_refusals_are_counted_and_logged_rate_limited(sock_path, caplog):
    from carpool.node.control import Access

    calls: list = []
    access = Access(GROUP, "ops")

    async def clients(path):
        os.chmod(path, 0o666)
        return [await ask_as(path, NOBODY, NOBODY) for _ in range(3)]

    with caplog.at_level(logging.WARNING, logger="carpool.control"):
        answers = run(sock_path, clients, calls, access=access)
    for answer in answers:
        [line] = lines(answer)
        assert "group ops" in line["error"]
    assert access.refused == 3 and calls == []
    logged = [r.getMessage() for r in caplog.records if r.name == "carpool.control"]
    assert len(logged) == 1 and f"uid {NOBODY}" in logged[0], logged


def test_refusal_log_comes_again_after_its_interval(caplog):
    from carpool.node.control import LOG_EVERY, Access, Peer

    now = [100.0]
    access = Access(None, clock=lambda: now[0])
    peer = Peer(pid=7, uid=NOBODY, gid=NOBODY, groups=())
    assert not access.allows(peer) and access.allows(Peer(pid=8, uid=0, gid=0, groups=()))
    with caplog.at_level(logging.WARNING, logger="carpool.control"):
        for _ in range(3):
            assert "error" in access.refuse(peer)
        now[0] += LOG_EVERY
        access.refuse(peer)
    logged = [r.getMessage() for r in caplog.records if r.name == "carpool.control"]
    assert access.refused == 4 and len(logged) == 2 and "4 refused" in logged[1], logged


def test_refusals_are_in_metrics():
    from carpool.web.metrics import Metrics

    status = {
        "state": "master",
        "counters": {"transitions": 1, "adverts_sent": 2, "adverts_received": 3, "send_errors": 0},
        "drops": {},
        "demote": 0,
        "partner": {},
        "config": {"version": 4},
        "sync": {"state": "in sync"},
        "dataplane": {
            "servers": [],
            "l4": {"applies": 1, "failures": 0},
            "l7": {"reloads": 0, "running": False},
        },
        "control": {"refused": 3},
    }
    text = Metrics().render(status, [], []).decode()
    assert "carpool_control_refused_total 3.0" in text


def test_carpool_status_says_it_was_refused(tmp_path, monkeypatch, capsys):
    from carpool import cli

    path = tmp_path / "carpool.toml"
    path.write_text(
        '[unit]\nrole = "first"\nsecret = "unit-test-secret"\n'
        f'state_dir = "{tmp_path}"\n\n'
        '[[interface]]\nname = "eth0"\nshared = ["198.18.0.10/24"]\n'
        'first = "198.18.0.11"\nsecond = "198.18.0.12"\n'
    )
    refusal = control.Access().refuse(control.Peer(pid=7, uid=NOBODY, gid=NOBODY, groups=()))
    monkeypatch.setattr(control, "request", lambda *_a, **_k: refusal)
    assert cli.main(["status", "--config", str(path)]) == 1
    assert "permission denied: the control socket is for root only" in capsys.readouterr().err
