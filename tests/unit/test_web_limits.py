"""What a client of port 443 may send and do (issue 13): a body refused before it is read,
uvicorn's connection and header limits, login attempts reserved before hashing, no cross-site
change with browser-cached Basic credentials, user roles, the OpenAPI document behind the login,
X-Forwarded-For never trusted."""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
import time

import pytest
from edits import DOC, Unit, unit_view
from fastapi.testclient import TestClient

from carpool.config.document import DocumentError, parse_document
from carpool.web import context as web_context
from carpool.web.app import create_app
from carpool.web.auth import LoginLimiter, hash_password
from carpool.web.context import COOKIE, WebContext

MiB = 1024 * 1024
PASSWORD = "right-password"
HASH = hash_password(PASSWORD)
ADMIN, OPERATOR, VIEWER = ("admin", PASSWORD), ("oper", PASSWORD), ("watch", PASSWORD)
USERS = [
    {"name": "admin", "password_hash": HASH},
    {"name": "oper", "password_hash": HASH, "role": "operator"},
    {"name": "watch", "password_hash": HASH, "role": "viewer"},
]
RS = "/api/v1/virtual-services/web/real-servers/198.18.2.101/80"


class Body:
    """A request body handed out in 1 MiB pieces, counting what the server pulled of it."""

    def __init__(self, size: int):
        self.size, self.pulled = size, 0

    def __iter__(self):
        for _ in range(self.size // MiB):
            self.pulled += MiB
            yield b" " * MiB


class Daemon:
    """What the web side asked of the daemon (failover) in these tests."""

    def __init__(self):
        self.failovers: list[str] = []

    def failover(self, request: dict) -> dict:
        self.failovers.append(request["who"])
        return {"state": "backup"}

    async def counters(self) -> tuple[list, list]:
        return [], []


def make_ctx(unit: Unit, daemon: Daemon) -> WebContext:
    ctx = WebContext(unit_view(unit, failover=daemon.failover, dataplane_counters=daemon.counters))

    async def no_partner() -> dict:
        return {"url": "https://198.18.0.12/", "status": None, "error": "not asked"}

    ctx.partner.get = no_partner
    ctx.metrics.render = lambda *_: b"carpool_up 1\n"  # type: ignore[method-assign]
    return ctx


@pytest.fixture
def daemon() -> Daemon:
    return Daemon()


@pytest.fixture
def unit(tmp_path) -> Unit:
    return Unit(tmp_path / "store", {**DOC, "user": USERS[:1]})


@pytest.fixture
def ctx(unit, daemon) -> WebContext:
    return make_ctx(unit, daemon)


@pytest.fixture
def web(ctx):
    with TestClient(create_app(ctx), base_url="https://testserver", follow_redirects=False) as c:
        yield c


# -- 1. body sizes, before the body is read ------------------------------------------------
@pytest.mark.parametrize("auth", [None, ("admin", "wrong"), ADMIN])
def test_a_50_mb_body_is_refused_before_it_is_read(web, unit, daemon, auth):
    body = Body(50 * MiB)
    start = time.monotonic()
    r = web.post(
        "/api/v1/failover",
        content=body,
        auth=auth,
        headers={"Content-Length": str(body.size), "Content-Type": "application/json"},
    )
    assert r.status_code in (401, 413), r.text[:200]
    assert body.pulled == 0 and daemon.failovers == []  # not read, the handler not called
    assert time.monotonic() - start < 1.0
    r = web.put(
        "/api/v1/config",
        content=(body := Body(50 * MiB)),
        auth=auth,
        headers={"Content-Length": str(body.size), "Content-Type": "application/json"},
    )
    assert r.status_code in (401, 413) and body.pulled == 0 and unit.version == 1


def test_more_than_64_kib_needs_an_admin_and_is_then_read(web, unit):
    big = {"key": "appliance.description", "value": "x" * 200_000}
    r = web.patch("/api/v1/config", json=big)
    assert r.status_code in (401, 413)
    r = web.patch("/api/v1/config", json=big, auth=ADMIN)  # read, then judged: too long
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == [
        "body",
        "appliance",
        "description",
    ]
    small = {"key": "appliance.description", "value": "fine"}
    assert web.patch("/api/v1/config", json=small, auth=ADMIN).status_code == 200
    assert unit.version == 2


def _scope(headers: list[tuple[bytes, bytes]], method: str = "POST") -> dict:
    return {
        "type": "http",
        "method": method,
        "path": "/api/v1/failover",
        "raw_path": b"/api/v1/failover",
        "query_string": b"",
        "headers": headers,
        "client": ("198.18.0.100", 40000),
        "server": ("198.18.0.11", 443),
        "scheme": "https",
        "http_version": "1.1",
        "root_path": "",
    }


def _run_limited(limit_mw, scope, receive) -> tuple[list[dict], bool]:
    """(messages sent, whether the app was called) for one request through the middleware."""
    sent: list[dict] = []
    called = []

    async def app(scope, receive, send):  # reads the whole body, as FastAPI does
        called.append(True)
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"read"})

    async def send(message):
        sent.append(message)

    asyncio.run(limit_mw(app)(scope, receive, send))
    return sent, bool(called)


def test_a_streamed_body_is_cut_off_at_the_limit():
    from carpool.web.limits import BodyLimit

    async def nobody(_request) -> bool:
        return False

    pulled = []

    async def endless():
        pulled.append(16 * 1024)
        return {"type": "http.request", "body": b" " * 16 * 1024, "more_body": True}

    sent, _ = _run_limited(
        lambda app: BodyLimit(app, nobody, small=64 * 1024),
        _scope([(b"transfer-encoding", b"chunked")]),
        endless,
    )
    assert sent[0]["status"] == 413 and sum(pulled) <= 64 * 1024 + 16 * 1024
    assert (b"connection", b"close") in sent[0]["headers"]
    pulled.clear()  # a Content-Length over the limit: refused at once, nothing read
    sent, called = _run_limited(
        lambda app: BodyLimit(app, nobody, small=64 * 1024),
        _scope([(b"content-length", b"100000")]),
        endless,
    )
    assert sent[0]["status"] == 413 and pulled == [] and not called


def test_a_body_that_trickles_in_is_cut_off_at_the_deadline():
    from carpool.web.limits import BodyLimit

    async def nobody(_request) -> bool:
        return False

    first = []

    async def trickle():
        if not first:
            first.append(1)
            return {"type": "http.request", "body": b"{", "more_body": True}
        await asyncio.sleep(3600)
        raise AssertionError("not reached")

    start = time.monotonic()
    sent, _ = _run_limited(
        lambda app: BodyLimit(app, nobody, deadline=0.1),
        _scope([(b"content-length", b"10")]),
        trickle,
    )
    assert sent[0]["status"] == 408 and time.monotonic() - start < 2


# -- 2. uvicorn's limits -------------------------------------------------------------------
def test_the_server_settings_limit_connections_and_headers_and_trust_no_proxy(ctx):
    from uvicorn.protocols.http.h11_impl import H11Protocol

    from carpool.web.server import WebServer

    config = WebServer(create_app(ctx), "127.0.0.1", 8443, "cert.pem", "key.pem").config
    assert config.proxy_headers is False and not config.forwarded_allow_ips
    assert config.limit_concurrency == 64
    assert config.timeout_keep_alive <= 5
    assert config.h11_max_incomplete_event_size <= 16 * 1024
    assert isinstance(config.http, type) and issubclass(config.http, H11Protocol)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_real_server_refuses_early_and_closes_slow_headers(ctx, daemon, tmp_path, monkeypatch):
    """uvicorn in a loop on 127.0.0.1, as the daemon runs it: a 50 MB POST is answered 413 at
    once and its connection closed; headers that never end are cut off; X-Forwarded-For is
    not the source."""
    from carpool.web import server as web_server
    from carpool.web.server import WebServer, ensure_certificate

    monkeypatch.setattr(web_server.HeaderDeadline, "header_timeout", 0.3)
    cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    ensure_certificate(cert, key, "127.0.0.1", "test")
    port = _free_port()
    tls = ssl.create_default_context()
    tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE
    basic = "Basic " + base64.b64encode(b"admin:wrong").decode()

    async def exchange(request: bytes, then: bytes = b"") -> tuple[bytes, float]:
        """What the server answers until it closes the connection, and how long that took."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls)
        start = asyncio.get_running_loop().time()
        writer.write(request + then)  # not drained: the server may close before it reads all
        answer = b""
        try:
            while chunk := await asyncio.wait_for(reader.read(65536), 5):
                answer += chunk
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.transport.abort()
        return answer, asyncio.get_running_loop().time() - start

    async def response(reader) -> bytes:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        return head + await reader.readexactly(length)

    async def kept_alive() -> tuple[list[bytes], float]:
        """Two requests on one connection, then idle until the server closes it."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls)
        answers = []
        for _ in range(2):
            writer.write(b"GET /login HTTP/1.1\r\nHost: x\r\n\r\n")
            answers.append(await response(reader))
        start = asyncio.get_running_loop().time()
        try:
            assert await asyncio.wait_for(reader.read(1), 5) == b""
        except (ConnectionError, ssl.SSLError):
            pass
        writer.transport.abort()
        return answers, asyncio.get_running_loop().time() - start

    async def main():
        server = WebServer(create_app(ctx), "127.0.0.1", port, cert, key)
        assert await server.start()
        try:
            big, took = await exchange(
                b"POST /api/v1/failover HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 52428800\r\n\r\n",
                b" " * MiB,
            )
            assert big.startswith(b"HTTP/1.1 413") and took < 1.0, big[:200]
            slow, took = await exchange(b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            assert slow == b"" and 0.2 < took < 3
            forwarded, _ = await exchange(
                b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                b"X-Forwarded-For: 203.0.113.9\r\nAuthorization: " + basic.encode() + b"\r\n\r\n"
            )
            assert forwarded.startswith(b"HTTP/1.1 401")
            early, took = await exchange(  # answered before the body: not read on
                b"POST /logout HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n", b"{"
            )
            assert early.startswith(b"HTTP/1.1 303") and took < 1.0, early[:200]
            answers, idle = await kept_alive()
            assert all(a.startswith(b"HTTP/1.1 200") for a in answers) and idle < 2
        finally:
            await server.stop()

    asyncio.run(main())
    assert daemon.failovers == []
    assert "127.0.0.1" in ctx.limiter._seen and "203.0.113.9" not in ctx.limiter._seen


def test_the_idle_server_leaves_the_loop_asleep_and_dates_each_response(ctx, tmp_path, monkeypatch):
    """uvicorn's own main loop wakes the event loop ten times a second (the Date header, a
    look at should_exit): an idle unit must not pay for that. Idle, the loop turns at most a
    few times a second; each response still carries the date of the moment it is sent."""
    from email.utils import parsedate_to_datetime

    from carpool.web import server as web_server
    from carpool.web.server import WebServer, ensure_certificate

    cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    ensure_certificate(cert, key, "127.0.0.1", "test")
    port = _free_port()
    tls = ssl.create_default_context()
    tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE
    shift = [0.0]
    monkeypatch.setattr(web_server, "_clock", lambda: time.time() + shift[0])

    async def dated() -> float:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls)
        writer.write(b"GET /login HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        writer.transport.abort()
        date = head.lower().split(b"\r\ndate: ")[1].split(b"\r\n")[0].decode()
        return parsedate_to_datetime(date).timestamp()

    turns = [0]

    async def main():
        loop = asyncio.get_running_loop()
        run_once = loop._run_once  # type: ignore[attr-defined]

        def counted():
            turns[0] += 1
            run_once()

        server = WebServer(create_app(ctx), "127.0.0.1", port, cert, key)
        assert await server.start()
        try:
            assert abs(await dated() - time.time()) < 2
            shift[0] = 3600.0  # an hour on: the next response says so
            assert abs(await dated() - (time.time() + 3600)) < 2
            loop._run_once = counted  # type: ignore[attr-defined]
            await asyncio.sleep(1.0)  # the idle window whose turns are counted
            loop._run_once = run_once  # type: ignore[attr-defined]
        finally:
            await server.stop()
        assert server.task is not None and server.task.done() and not server.task.cancelled()

    asyncio.run(main())
    assert turns[0] <= 6, f"the idle server turned the loop {turns[0]} times in 1 s"


# -- 3. login attempts reserved before hashing ---------------------------------------------
def test_concurrent_guesses_from_one_address_verify_at_most_the_limit(ctx, monkeypatch):
    verified = []

    def slow_verify(users, name, password):
        verified.append(password)
        time.sleep(0.02)  # argon2's tens of ms
        return users.get(name) is not None and password == PASSWORD

    monkeypatch.setattr(web_context, "verify_password", slow_verify)

    async def guesses():
        return await asyncio.gather(
            *(ctx.check_password("198.18.0.100", "admin", f"guess{n}") for n in range(60)),
            return_exceptions=True,
        )

    results = asyncio.run(guesses())
    assert len(verified) <= ctx.limiter.failures, len(verified)
    assert all(r is False or type(r).__name__ == "Blocked" for r in results), results
    assert ctx.limiter.retry_after("198.18.0.100") > 0
    verified.clear()  # concurrent right passwords from another address all get in

    async def rights():
        return await asyncio.gather(
            *(ctx.check_password("198.18.0.101", "admin", PASSWORD) for _ in range(8))
        )

    assert asyncio.run(rights()) == [True] * 8 and len(verified) == 8


def test_concurrent_basic_requests_verify_the_password_once(web, monkeypatch):
    calls = []
    verify = web_context.verify_password

    def counting(users, name, password):
        calls.append(name)
        return verify(users, name, password)

    monkeypatch.setattr(web_context, "verify_password", counting)
    assert web.get("/api/v1/status", auth=ADMIN).status_code == 200
    assert web.get("/api/v1/status", auth=ADMIN).status_code == 200
    assert calls == ["admin"]


def test_a_blocked_address_waits_even_with_the_right_password(web):
    for n in range(5):
        assert web.get("/api/v1/status", auth=("admin", f"guess{n}")).status_code == 401
    r = web.get("/api/v1/status", auth=ADMIN)
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0
    r = web.post("/login", data={"username": "admin", "password": PASSWORD})
    assert r.status_code == 429 and "Too many failed logins" in r.text


def test_the_limiter_reserves_an_attempt_before_it_is_checked():
    limiter = LoginLimiter(failures=2, window=60)
    first, second = limiter.reserve("a"), limiter.reserve("a")
    assert first and second and not limiter.reserve("a")  # both in flight
    assert limiter.retry_after("a") == 0  # ... but no failure yet
    limiter.done("a", ok=True)  # a success gives its attempt back
    assert limiter.reserve("a")
    limiter.done("a", ok=False)
    limiter.done("a", ok=False)
    assert limiter.retry_after("a") > 0 and not limiter.reserve("a")
    assert limiter.reserve("b")


# -- 4. no cross-site change with Basic ----------------------------------------------------
def test_basic_changes_need_a_non_simple_request_and_never_come_cross_site(web, unit, daemon):
    web.auth = ADMIN
    refused = [
        web.post("/api/v1/failover", content=b"{}", headers={"Content-Type": "text/plain"}),
        web.post("/api/v1/failover", data={"confirm": "true"}),
        web.post("/api/v1/failover"),
        web.post("/api/v1/failover", json={}, headers={"Sec-Fetch-Site": "cross-site"}),
        web.delete("/api/v1/virtual-services/web", headers={"Sec-Fetch-Site": "cross-site"}),
    ]
    assert [r.status_code for r in refused] == [403] * 5, [r.text for r in refused]
    assert unit.version == 1
    assert daemon.failovers == []
    for r in (
        web.post("/api/v1/failover", json={}),
        web.post("/api/v1/failover", headers={"X-Requested-With": "carpool"}),
        web.post("/api/v1/failover", headers={"X-CSRF-Token": "any"}),
        web.post("/api/v1/failover", json={}, headers={"Sec-Fetch-Site": "same-origin"}),
    ):
        assert r.status_code == 200, r.text
    assert len(daemon.failovers) == 4
    assert web.get("/api/v1/status").status_code == 200  # reading needs nothing more
    # no other site's page can send a DELETE without asking first (CORS): it needs nothing
    assert web.delete("/api/v1/virtual-services/web").status_code == 200


def test_a_session_still_needs_its_csrf_token(web, ctx, daemon):
    token, session = ctx.sessions.create("admin", HASH)
    web.cookies.set(COOKIE, token)
    assert web.post("/api/v1/failover", json={}).status_code == 403
    r = web.post("/api/v1/failover", json={}, headers={"X-CSRF-Token": session.csrf})
    assert r.status_code == 200 and daemon.failovers == ["api (admin)"]


# -- 5. roles --------------------------------------------------------------------------------
def test_a_user_has_a_role_admin_by_default_and_unwritten():
    doc = parse_document({**DOC, "user": USERS})
    assert [u.role for u in doc.user] == ["admin", "operator", "viewer"]
    assert doc.model_dump(mode="json")["user"] == USERS  # an admin's role is not written:
    plain = parse_document({**DOC, "user": USERS[:1]})  # documents of before keep their hash
    assert "role" not in plain.model_dump()["user"][0]
    with pytest.raises(DocumentError) as e:
        parse_document({**DOC, "user": [{**USERS[0], "role": "root"}]})
    assert e.value.problems[0].loc[:3] == ("user", 0, "role")


@pytest.fixture
def roles(tmp_path, daemon):
    unit = Unit(tmp_path / "roles", {**DOC, "user": USERS})
    ctx = make_ctx(unit, daemon)
    with TestClient(create_app(ctx), base_url="https://testserver", follow_redirects=False) as c:
        c.headers["X-Requested-With"] = "test"
        c.unit, c.ctx = unit, ctx
        yield c


ROUTES = [  # method, path, body, the least role that may
    ("GET", "/api/v1/status", None, "viewer"),
    ("GET", "/metrics", None, "viewer"),
    ("GET", "/api/v1/virtual-services", None, "viewer"),
    ("GET", "/api/v1/virtual-services/web/real-servers", None, "viewer"),
    ("GET", "/api/v1/events", None, "viewer"),
    ("GET", "/api/v1/config/history", None, "viewer"),
    ("GET", "/api/v1/config", None, "admin"),  # holds the password hashes
    ("POST", "/api/v1/failover", {}, "operator"),
    ("POST", f"{RS}/disable", None, "operator"),
    ("POST", f"{RS}/enable", None, "operator"),
    ("PUT", RS, {"address": "198.18.2.101", "port": 80, "weight": 3}, "admin"),
    ("PATCH", "/api/v1/config", {"key": "appliance.description", "value": "x"}, "admin"),
    ("POST", "/api/v1/config/rollback", {"version": 1}, "admin"),
    ("DELETE", "/api/v1/virtual-services/web", None, "admin"),
]
RANK = {"viewer": 0, "operator": 1, "admin": 2}


@pytest.mark.parametrize("method, path, body, least", ROUTES)
@pytest.mark.parametrize("who", ["viewer", "operator", "admin"])
def test_each_route_needs_its_role(roles, who, method, path, body, least):
    auth = {"viewer": VIEWER, "operator": OPERATOR, "admin": ADMIN}[who]
    r = roles.request(method, path, json=body, auth=auth)
    if RANK[who] >= RANK[least]:
        assert r.status_code < 400, (r.status_code, r.text)
    else:
        assert r.status_code == 403 and least in r.text, (r.status_code, r.text)


def test_an_operator_enables_and_disables_a_real_server(roles):
    r = roles.post(f"{RS}/disable", auth=OPERATOR)
    assert r.status_code == 200, r.text
    assert roles.unit.document["virtual_service"][0]["real_server"][0]["enabled"] is False
    assert roles.unit.store.history()[-1].who.startswith("api (oper): rs set web")
    assert roles.post(f"{RS}/enable", auth=OPERATOR).status_code == 200
    assert roles.unit.document["virtual_service"][0]["real_server"][0]["enabled"] is True
    gone = "/api/v1/virtual-services/web/real-servers/198.18.2.199/80/enable"
    assert roles.post(gone, auth=OPERATOR).status_code == 404


def test_a_viewer_cannot_send_a_large_body(roles):
    big = {"key": "appliance.description", "value": "x" * 200_000}
    assert roles.patch("/api/v1/config", json=big, auth=VIEWER).status_code == 413


def _session(roles, user: str) -> str:
    token, session = roles.ctx.sessions.create(user, HASH)
    roles.cookies.set(COOKIE, token)
    return session.csrf


def test_the_wui_forms_need_their_role(roles, daemon):
    csrf = _session(roles, "watch")
    assert "a viewer" in roles.get("/services").text
    assert roles.post("/failover", data={"csrf": csrf}).status_code == 403
    assert roles.post("/services/web/delete", data={"csrf": csrf}).status_code == 403
    assert 'id="confirm-failover"' not in roles.get("/failover").text
    csrf = _session(roles, "oper")
    assert roles.post("/services/web/delete", data={"csrf": csrf}).status_code == 403
    assert roles.post("/ha", data={"csrf": csrf}).status_code == 403
    assert 'id="add-vs"' not in roles.get("/services").text
    assert roles.post("/failover", data={"csrf": csrf}).status_code == 303
    assert daemon.failovers == ["wui (oper)"] and roles.unit.version == 1
    csrf = _session(roles, "admin")
    assert 'id="add-vs"' in roles.get("/services").text
    assert roles.post("/services/web/delete", data={"csrf": csrf}).status_code == 303


# -- 6. the OpenAPI document behind the login ----------------------------------------------
def test_the_openapi_document_needs_a_login(web, ctx):
    assert web.get("/api/openapi.json").status_code == 401
    spec = web.get("/api/openapi.json", auth=ADMIN).json()
    assert "/api/v1/failover" in spec["paths"]
    token, _ = ctx.sessions.create("admin", HASH)
    web.cookies.set(COOKIE, token)
    assert web.get("/api/openapi.json").status_code == 200
    assert web.get("/docs").status_code == 404 and web.get("/redoc").status_code == 404
