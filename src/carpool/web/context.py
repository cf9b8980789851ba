"""What the web layer needs of the unit, in one place (through node.view.UnitView, never the
daemon): its status, its config handlers (the same ones `carpool config` uses: same validation,
history and sync), users, sessions, events."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable

from fastapi import Depends, HTTPException, Request

from .. import events
from ..config.document import USER_ROLES, UserRole
from ..config.edit import Edit, Op
from .auth import (
    Blocked,
    LoginLimiter,
    Session,
    Sessions,
    csrf_ok,
    parse_basic,
    verify_password,
)
from .events import EventLog
from .metrics import Metrics
from .partner import PartnerView

log = events.logger("carpool.web", events.Kind.WEB)
login_log = events.logger("carpool.web.login", events.Kind.LOGIN)
COOKIE = "carpool_session"
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
ATTEMPT_POLL = 0.02  # s between looks while an address's login attempts are all in flight


class LoginRequired(Exception):
    """A page asked for without a session: the browser is sent to the login page."""


class WebContext:
    def __init__(self, unit, events: EventLog | None = None):
        self.unit = unit  # node.view.UnitView
        cfg = unit.cfg
        host = f"[{cfg.web_bind}]" if ":" in cfg.web_bind else cfg.web_bind
        self.own_url = (
            f"https://{host}/" if cfg.web.port == 443 else f"https://{host}:{cfg.web.port}/"
        )
        self.sessions = Sessions()
        self.limiter = LoginLimiter()
        self.events = events or EventLog()
        self.partner = PartnerView(lambda: self.cfg.partner_url, cfg.secret)
        self.metrics = Metrics()
        self._basic_ok: dict[tuple[str, str], tuple[str, float]] = {}

    # -- the unit --------------------------------------------------------------------------
    @property
    def cfg(self):
        return self.unit.cfg

    def status(self) -> dict:
        """The daemon's status plus what the partner's dashboard needs of this unit."""
        status = self.unit.status()
        status.setdefault("initial_wait", self.cfg.initial_wait)
        status["web_url"] = self.own_url
        return status

    async def pair(self) -> list[dict]:
        from .view import pair

        return pair(self.status(), self.own_url, await self.partner.get())

    def is_active(self) -> bool:
        return self.unit.is_active()

    def document(self) -> dict:
        return self.current()[1]

    def current(self) -> tuple[int, dict]:
        """(version, document) read together (no await between): an edit made from it may
        expect that version."""
        return self.unit.version()[0], self.unit.document().shown()

    def version(self) -> int:
        return self.unit.version()[0]

    def servers(self) -> list[dict]:
        return self.unit.servers()

    async def doctor(self) -> dict:
        return await self.unit.doctor()

    async def edit(self, who: str, *ops: Op, expect_version: int | None = None) -> dict:
        """Operations applied by the daemon (config.edit): the answer, or a typed error's."""
        return await self.call("config.edit", who=who, **Edit(ops, expect_version).to_json())

    async def call(self, command: str, **request) -> dict:
        """One of the daemon's control handlers (config.*), as the control socket calls it."""
        result = self.unit.handlers()[command](request)
        if asyncio.iscoroutine(result):
            result = await result
        return result

    async def failover(self, who: str) -> dict:
        return self.unit.failover({"who": who})

    # -- users -----------------------------------------------------------------------------
    def users(self) -> dict[str, str]:
        return {u.name: u.password_hash for u in self.unit.document().user}

    async def check_password(
        self, source: str, name: str, password: str, known: Callable[[], bool] | None = None
    ) -> bool:
        """Verify a password with one of `source`'s login attempts, reserved before the hash is
        computed: concurrent guesses from one address never have more passwords checked than
        the limiter allows. While its attempts are all in flight, this waits for them (a
        script's parallel first requests all get in); `known()` true (a Basic success seen
        lately) skips the check. Raises Blocked while the address is refused, even with the
        right password. The hash is computed in a thread: argon2 takes tens of ms the election
        loop must not lose."""
        while True:
            wait = self.limiter.retry_after(source)
            if wait:
                raise Blocked(wait)
            if known is not None and known():
                return True
            if self.limiter.reserve(source):
                break
            await asyncio.sleep(ATTEMPT_POLL)
        ok = False
        try:
            ok = await asyncio.to_thread(verify_password, self.users(), name, password)
        finally:
            self.limiter.done(source, ok)  # cancelled: counted as a failure
        if not ok:
            login_log.warning("failed login for %r from %s", name[:32], source)
        return ok

    async def basic_user(self, request: Request, header: str) -> str | None:
        """The user of a valid HTTP Basic header (successes cached a minute: scripts poll)."""
        creds = parse_basic(header)
        source = source_of(request)
        if creds is None:
            return None
        name, password = creds
        key = (name, hashlib.sha256(password.encode()).hexdigest())

        def known() -> bool:
            hit = self._basic_ok.get(key)
            return (
                hit is not None and self.users().get(name) == hit[0] and hit[1] > time.monotonic()
            )

        try:
            ok = await self.check_password(source, name, password, known)
        except Blocked as e:
            raise too_many(e.retry_after) from None
        if not ok:
            return None
        stored = self.users().get(name)
        if stored is not None and not known():
            if len(self._basic_ok) > 1000:
                self._basic_ok.clear()
            self._basic_ok[key] = (stored, time.monotonic() + 60)
        return name

    async def may_send_large(self, request: Request) -> bool:
        """Whether a request may carry a body over the small limit (web/limits.py): a change
        by an admin, by session or HTTP Basic, judged from the headers only."""
        if request.method not in UNSAFE:
            return False
        header = request.headers.get("authorization")
        if header:
            user = await self.basic_user(request, header)
        else:
            session = self.session(request)
            user = session.user if session else None
        return user is not None and self.may(user, "admin")

    # -- roles -----------------------------------------------------------------------------
    def role_of(self, user: str) -> UserRole | None:
        return next((u.role for u in self.unit.document().user if u.name == user), None)

    def may(self, user: str, role: UserRole) -> bool:
        """Whether `user` may do what `role` may (admin > operator > viewer)."""
        have = self.role_of(user)
        return have is not None and USER_ROLES.index(have) >= USER_ROLES.index(role)

    def session(self, request: Request) -> Session | None:
        session = self.sessions.get(request.cookies.get(COOKIE))
        if session is not None and self.users().get(session.user) != session.password_hash:
            # the user was removed or the password changed (here or on the partner, by sync)
            self.sessions.drop_user(session.user)
            log.info("sessions of %s ended: user removed or password changed", session.user)
            return None
        return session


def source_of(request: Request) -> str:
    return request.client.host if request.client else "?"


def too_many(seconds: float) -> HTTPException:
    return HTTPException(
        429,
        f"too many failed logins from this address; try again in {int(seconds) + 1} s",
        headers={"Retry-After": str(int(seconds) + 1)},
    )


def cross_site(request: Request) -> bool:
    """A change a browser says another site's page made (Sec-Fetch-Site)."""
    return request.method in UNSAFE and request.headers.get("sec-fetch-site") == "cross-site"


def not_simple(request: Request) -> bool:
    """Whether a POST is one another site's page cannot make without the browser asking this
    unit first (a CORS preflight, never granted): a header of its own, or a JSON body. A plain
    form or a text/plain fetch is simple, and a browser adds the Basic credentials it has
    cached for this unit to it. (PUT, PATCH and DELETE are never simple: a page of another
    site cannot send them without that preflight, so `curl -X DELETE -u ...` needs nothing.)"""
    if request.headers.get("x-requested-with") or request.headers.get("x-csrf-token"):
        return True
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


async def api_user(request: Request) -> str:
    """Dependency of every API route: the session (CSRF token on changes) or HTTP Basic (a POST
    must be one no other site's page can make: JSON, or X-Requested-With); a change a browser
    marks cross-site is refused either way."""
    ctx: WebContext = request.app.state.ctx
    if cross_site(request):
        raise HTTPException(403, "a change from another site's page is refused")
    header = request.headers.get("authorization")
    if header:
        user = await ctx.basic_user(request, header)
        if user:
            if request.method == "POST" and not not_simple(request):
                raise HTTPException(
                    403,
                    "a POST with HTTP Basic needs a JSON body (Content-Type: "
                    "application/json) or an X-Requested-With header",
                )
            return user
    else:
        session = ctx.session(request)
        if session is not None:
            if request.method in UNSAFE and not csrf_ok(
                session, request.headers.get("x-csrf-token")
            ):
                raise HTTPException(403, "missing or wrong CSRF token (X-CSRF-Token header)")
            return session.user
    # A page's fetch() gets no Basic challenge: the browser would pop up its own login box.
    challenge = (
        {}
        if request.headers.get("x-requested-with")
        else {"WWW-Authenticate": 'Basic realm="carpool", charset="UTF-8"'}
    )
    raise HTTPException(
        401, "log in: HTTP Basic (user and password) or a WUI session", headers=challenge
    )


def api_role(role: UserRole) -> Callable[..., Awaitable[str]]:
    """Dependency of an API route that needs `role` (or a stronger one): the user, else 403."""

    async def user_with_role(request: Request, user: str = Depends(api_user)) -> str:
        ctx: WebContext = request.app.state.ctx
        if not ctx.may(user, role):
            raise HTTPException(403, f"{user} is {ctx.role_of(user)}: this needs the {role} role")
        return user

    return user_with_role


viewer, operator, admin = api_role("viewer"), api_role("operator"), api_role("admin")


class Forbidden(Exception):
    """A page's action needs a stronger role than the session's user has."""

    def __init__(self, user: str, role: str | None, needs: str):
        super().__init__(f"{user} is {role}: this needs the {needs} role")


def page_session(request: Request) -> Session:
    """Dependency of every page: the browser session, else off to the login page."""
    session = request.app.state.ctx.session(request)
    if session is None:
        raise LoginRequired()
    return session


def page_role(role: UserRole) -> Callable[..., Session]:
    """Dependency of a page's action that needs `role`: the session, else Forbidden (403)."""

    def session_with_role(request: Request, session: Session = Depends(page_session)) -> Session:
        ctx: WebContext = request.app.state.ctx
        if not ctx.may(session.user, role):
            raise Forbidden(session.user, ctx.role_of(session.user), role)
        return session

    return session_with_role
