"""The WUI's pages: server-rendered (Jinja2), every form with a CSRF token; the dashboard's live
part is re-fetched by static/app.js. Changes are operations (config/edit.py) the daemon applies.
A form the daemon refused is shown again with its problems, status 422; a page about a thing
that is gone is 404."""

from __future__ import annotations

import time
from pathlib import Path

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from .. import events
from ..config import certs
from ..config.edit import (
    AddCertificate,
    AddVirtualService,
    AlreadyExists,
    Conflict,
    Edit,
    EditError,
    Invalid,
    NotFound,
    RemoveCertificate,
    RemoveVirtualService,
    ReplaceCertificate,
    ReplaceVirtualService,
    SetKey,
    error_of,
)
from ..family import hostport
from .auth import Blocked, Session, csrf_ok
from .charts import line_chart, timeline
from .context import COOKIE, WebContext, login_log, page_role, page_session, source_of
from .events import KINDS, when
from .forms import FormErrors, content_text, servers_text, vs_from_form, vs_problems
from .view import ICONS, active_url

log = events.logger("carpool.web", events.Kind.WEB)
templates = Jinja2Templates(directory=str(Path(__file__).resolve().parent / "templates"))
templates.env.filters["when"] = when
templates.env.globals["hostport"] = hostport
HA_FIELDS = ("ha_timeout", "preferred", "initial_wait", "vhid", "vmac")


def router() -> APIRouter:
    pages = APIRouter()

    def ctx_of(request: Request) -> WebContext:
        return request.app.state.ctx

    editor, operator = page_role("admin"), page_role("operator")

    async def render(
        request: Request, name: str, session: Session | None, status_code=200, **data
    ) -> HTMLResponse:
        ctx = ctx_of(request)
        units = await ctx.pair() if session else []
        active = active_url(units)
        data.update(
            request=request,
            session=session,
            units=units,
            own=ctx.own_url,
            role=ctx.cfg.role,
            readonly=not ctx.is_active(),
            may_edit=ctx.is_active() and session is not None and ctx.may(session.user, "admin"),
            may_operate=session is not None and ctx.may(session.user, "operator"),
            user_role=ctx.role_of(session.user) if session else None,
            active_url=active if active != ctx.own_url else None,
            icons=ICONS,
        )
        return templates.TemplateResponse(request, name, data, status_code=status_code)

    async def check_csrf(request: Request, session: Session) -> dict:
        form = dict(await request.form())
        token = form.get("csrf")  # a multipart form may send a file under that name too
        if not isinstance(token, str) or not csrf_ok(session, token):
            raise CsrfRejected()
        return form

    # -- login -----------------------------------------------------------------------------
    @pages.get("/login", response_class=HTMLResponse)
    async def login_page(request: Request):
        return await render(request, "login.html", None)

    @pages.post("/login", response_class=HTMLResponse)
    async def login(request: Request):
        ctx = ctx_of(request)
        form = await request.form()
        name, password = str(form.get("username", "")), str(form.get("password", ""))
        source = source_of(request)
        try:
            ok = await ctx.check_password(source, name, password)
        except Blocked as e:
            return await render(
                request,
                "login.html",
                None,
                429,
                username=name,
                error=f"Too many failed logins from {source}: "
                f"try again in {int(e.retry_after) + 1} s.",
            )
        if not ok:
            return await render(
                request,
                "login.html",
                None,
                401,
                username=name,
                error="Wrong user name or password.",
            )
        token, _ = ctx.sessions.create(name, ctx.users().get(name, ""))
        login_log.info("%s logged in from %s", name, source)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(
            COOKIE,
            token,
            httponly=True,
            secure=True,
            samesite="strict",
            max_age=int(ctx.sessions.lifetime),
            path="/",
        )
        return response

    @pages.post("/logout")
    async def logout(request: Request, session: Session = Depends(page_session)):
        await check_csrf(request, session)
        ctx_of(request).sessions.drop(request.cookies.get(COOKIE))
        login_log.info("%s logged out", session.user)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="strict")
        return response

    # -- dashboard -------------------------------------------------------------------------
    @pages.get("/", response_class=HTMLResponse)
    async def dashboard(request: Request, session: Session = Depends(page_session)):
        return await render(request, "dashboard.html", session, **_live_data(ctx_of(request)))

    @pages.get("/live", response_class=HTMLResponse)
    async def live(request: Request):
        session = ctx_of(request).session(request)
        if session is None:
            return HTMLResponse("login needed", status_code=401)
        return await render(request, "_live.html", session, **_live_data(ctx_of(request)))

    # -- virtual services ------------------------------------------------------------------
    @pages.get("/services", response_class=HTMLResponse)
    async def services(request: Request, session: Session = Depends(page_session)):
        ctx = ctx_of(request)
        return await render(
            request,
            "services.html",
            session,
            services=ctx.document().get("virtual_service", []),
            health=_health(ctx),
            message=request.query_params.get("done"),
        )

    @pages.get("/services/new", response_class=HTMLResponse)
    async def vs_new(request: Request, session: Session = Depends(page_session)):
        return await render(request, "vs_form.html", session, form={}, errors={}, editing=None)

    @pages.get("/services/{name}/edit", response_class=HTMLResponse)
    async def vs_edit(request: Request, name: str, session: Session = Depends(page_session)):
        vs = _find(ctx_of(request).document(), name)
        if vs is None:
            return await render(
                request,
                "message.html",
                session,
                404,
                title="Not found",
                text=f"No virtual service {name!r}.",
            )
        return await render(
            request, "vs_form.html", session, form=_vs_form(vs), errors={}, editing=name
        )

    async def save_vs(request: Request, session: Session, editing: str | None):
        ctx = ctx_of(request)
        form = await check_csrf(request, session)
        for _ in range(3):  # the form merges into what is current: if that changed, merge again
            version, doc = ctx.current()
            old = _find(doc, editing) if editing is not None else None
            if editing is not None and old is None:
                return await render(
                    request,
                    "message.html",
                    session,
                    404,
                    title="Not found",
                    text=f"No virtual service {editing!r}.",
                )
            try:
                vs = vs_from_form(form, old)
            except FormErrors as e:
                return await render(
                    request,
                    "vs_form.html",
                    session,
                    422,
                    form=form,
                    errors=e.errors,
                    editing=editing,
                )
            op = AddVirtualService(vs) if editing is None else ReplaceVirtualService(editing, vs)
            answer = await ctx.edit(
                f"wui ({session.user})", op, expect_version=None if editing is None else version
            )
            error = error_of(answer)
            if not isinstance(error, Conflict):
                break
        if error is None:
            what = f"vs {'set' if editing else 'add'} {vs['name']}"
            return RedirectResponse(
                f"/services?done={what}+(version+{answer['version']})", status_code=303
            )
        if isinstance(error, NotFound):
            return await render(
                request, "message.html", session, 404, title="Not found", text=error.message
            )
        return await render(
            request,
            "vs_form.html",
            session,
            422,
            form=form,
            errors=_vs_errors(error),
            editing=editing,
        )

    @pages.post("/services/new", response_class=HTMLResponse)
    async def vs_create(request: Request, session: Session = Depends(editor)):
        return await save_vs(request, session, None)

    @pages.post("/services/{name}/edit", response_class=HTMLResponse)
    async def vs_update(request: Request, name: str, session: Session = Depends(editor)):
        return await save_vs(request, session, name)

    @pages.post("/services/{name}/delete", response_class=HTMLResponse)
    async def vs_delete(request: Request, name: str, session: Session = Depends(editor)):
        ctx = ctx_of(request)
        await check_csrf(request, session)
        answer = await ctx.edit(f"wui ({session.user})", RemoveVirtualService(name))
        error = error_of(answer)
        if error is not None:
            return await render(
                request,
                "message.html",
                session,
                404 if isinstance(error, NotFound) else 409,
                title="Not found" if isinstance(error, NotFound) else "Not removed",
                text=error.message,
            )
        return RedirectResponse(
            f"/services?done=vs+rm+{name}+(version+{answer['version']})", status_code=303
        )

    # -- certificates ----------------------------------------------------------------------
    async def cert_page(request, session, status_code=200, form=None, errors=None, done=None):
        rows = certs.rows(ctx_of(request).unit.document(), time.time())
        return await render(
            request,
            "certificates.html",
            session,
            status_code,
            certificates=rows,
            form=form or {},
            errors=errors or {},
            message=done,
        )

    @pages.get("/certificates", response_class=HTMLResponse)
    async def certificates(request: Request, session: Session = Depends(page_session)):
        return await cert_page(request, session, done=request.query_params.get("done"))

    @pages.post("/certificates", response_class=HTMLResponse)
    async def cert_upload(request: Request, session: Session = Depends(editor)):
        ctx = ctx_of(request)
        form = await check_csrf(request, session)
        name = str(form.get("name") or "").strip()
        texts, errors = {}, {}
        for field in ("chain", "key"):
            upload = form.get(f"{field}_file")
            pasted = form.get(field)
            text = pasted if isinstance(pasted, str) else ""
            if upload is not None and not isinstance(upload, str) and upload.filename:
                try:
                    text = (await upload.read()).decode()
                except UnicodeDecodeError:
                    errors[field] = ["the file is not PEM text"]
            texts[field] = text.strip()
        if not texts["chain"]:
            errors.setdefault("chain", []).append("a PEM certificate chain is needed")
        if errors:
            return await cert_page(request, session, 422, {"name": name}, errors)
        exists = any(c.name == name for c in ctx.unit.document().certificate)
        op = (ReplaceCertificate if exists else AddCertificate)(name, texts["chain"], texts["key"])
        answer = await ctx.edit(f"wui ({session.user})", op)
        error = error_of(answer)
        if error is not None:
            return await cert_page(request, session, 422, {"name": name}, _cert_errors(error))
        what = f"cert {'replace' if exists else 'add'} {name}"
        return RedirectResponse(
            f"/certificates?done={what}+(version+{answer['version']})", status_code=303
        )

    @pages.post("/certificates/{name}/delete", response_class=HTMLResponse)
    async def cert_delete(request: Request, name: str, session: Session = Depends(editor)):
        ctx = ctx_of(request)
        await check_csrf(request, session)
        error = error_of(answer := await ctx.edit(f"wui ({session.user})", RemoveCertificate(name)))
        if error is not None:
            return await cert_page(request, session, 409, errors={"general": [error.message]})
        return RedirectResponse(
            f"/certificates?done=cert+rm+{name}+(version+{answer['version']})", status_code=303
        )

    # -- statistics ------------------------------------------------------------------------
    @pages.get("/stats", response_class=HTMLResponse)
    async def stats_page(request: Request, session: Session = Depends(page_session)):
        ctx = ctx_of(request)
        stats = ctx.unit.stats()
        span = request.query_params.get("range", "1h")
        span = span if span in stats.ranges else "1h"
        step, count = stats.ranges[span]
        end = time.time()
        start = end - step * count
        units = await ctx.pair()
        services = []
        everything = ctx.unit.document().virtual_service
        chosen = request.query_params.get("service")
        shown = [v for v in everything if v.name == chosen] if chosen else everything[:STATS_SHOWN]
        for vs in shown:
            series = stats.series(vs.name, span)
            graphs = [
                line_chart(_pick(series, field), start, end, title, unit)
                for field, title, unit in CHARTS["proxied" if vs.proxied else "l4"]
            ]
            servers = []
            for key, group in vs.groups():
                for rs in group.real_server:
                    name = f"{key}/{hostport(rs.address, rs.port)}"
                    server_series = stats.series(name, span)
                    field = "requests" if vs.proxied else "connections"
                    servers.append(
                        {
                            "name": name,
                            "latest": stats.latest(name),
                            "chart": line_chart(
                                _pick(server_series, field),
                                start,
                                end,
                                f"{name} {field}",
                                "",
                                360,
                                70,
                            ),
                        }
                    )
            services.append(
                {
                    "name": vs.name,
                    "type": vs.type,
                    "latest": stats.latest(vs.name),
                    "graphs": graphs,
                    "servers": servers,
                }
            )
        states = timeline(
            {u["role"]: (u["status"] or {}).get("events", []) for u in units}, start, end
        )
        return await render(
            request,
            "stats.html",
            session,
            services=services,
            span=span,
            spans=list(stats.ranges),
            states=states,
            more=[v.name for v in everything[STATS_SHOWN:]] if not chosen else [],
        )

    # -- HA parameters ---------------------------------------------------------------------
    @pages.get("/ha", response_class=HTMLResponse)
    async def ha(request: Request, session: Session = Depends(page_session)):
        doc = ctx_of(request).document()
        return await render(
            request,
            "ha.html",
            session,
            doc=doc,
            errors={},
            form=None,
            message=request.query_params.get("done"),
        )

    @pages.post("/ha", response_class=HTMLResponse)
    async def ha_save(request: Request, session: Session = Depends(editor)):
        ctx = ctx_of(request)
        form = await check_csrf(request, session)
        version, doc = ctx.current()
        errors: dict[str, list[str]] = {}
        ops = []
        for key, kind in (("ha_timeout", int), ("vhid", int), ("initial_wait", float)):
            try:
                ops.append(SetKey(f"ha.{key}", kind(str(form.get(key, "")).strip())))
            except ValueError:
                errors.setdefault(key, []).append(f"a number, not {form.get(key)!r}")
        ops += [
            SetKey("ha.preferred", str(form.get("preferred", "none"))),
            SetKey("ha.vmac", form.get("vmac") == "on"),
        ]
        ops += [
            SetKey(f"interface[{i['name']}].check", form.get(f"check_{i['name']}") == "on")
            for i in doc["interface"]
            if not i.get("heartbeat")
        ]
        if not errors:
            answer = await ctx.edit(f"wui ({session.user}): HA parameters", *ops)
            error = error_of(answer)
            if error is None:
                return RedirectResponse(
                    f"/ha?done=saved+(version+{answer['version']})", status_code=303
                )
            errors = _ha_errors(error)
        try:  # shown again with what was entered
            doc = Edit(tuple(ops)).apply(doc, version)
        except EditError:
            pass
        return await render(
            request, "ha.html", session, 422, doc=doc, errors=errors, form=form, message=None
        )

    # -- history ---------------------------------------------------------------------------
    @pages.get("/history", response_class=HTMLResponse)
    async def history(request: Request, session: Session = Depends(page_session)):
        ctx = ctx_of(request)
        records = (await ctx.call("config.history"))["history"]
        shown = request.query_params.get("diff")
        diff = None
        if shown and ctx.may(session.user, "admin"):  # a diff may show password hashes
            diff = await ctx.call("config.diff", b=shown)
        return await render(
            request,
            "history.html",
            session,
            history=list(reversed(records)),
            current=ctx.version(),
            diff=diff,
            message=request.query_params.get("done"),
        )

    @pages.post("/history/{version}/rollback", response_class=HTMLResponse)
    async def rollback(request: Request, version: int, session: Session = Depends(editor)):
        ctx = ctx_of(request)
        await check_csrf(request, session)
        answer = await ctx.call("config.rollback", version=version, who=f"wui ({session.user})")
        if "error" in answer:
            return await render(
                request, "message.html", session, 409, title="Not rolled back", text=answer["error"]
            )
        return RedirectResponse(
            f"/history?done=rolled+back+to+{version}+(version+{answer['version']})", status_code=303
        )

    # -- events ----------------------------------------------------------------------------
    @pages.get("/events", response_class=HTMLResponse)
    async def events(request: Request, session: Session = Depends(page_session)):
        kind = request.query_params.get("kind") or None
        search = (request.query_params.get("q") or "")[:200]
        return await render(
            request,
            "events.html",
            session,
            kind=kind,
            search=search,
            kinds=KINDS,
            events=list(reversed(ctx_of(request).events.recent(kind, 0, 500, search))),
        )

    # -- force failover --------------------------------------------------------------------
    @pages.get("/failover", response_class=HTMLResponse)
    async def failover_page(request: Request, session: Session = Depends(page_session)):
        return await render(request, "failover.html", session, result=None)

    @pages.post("/failover", response_class=HTMLResponse)
    async def failover(request: Request, session: Session = Depends(operator)):
        ctx = ctx_of(request)
        await check_csrf(request, session)
        answer = await ctx.failover(f"wui ({session.user})")
        if "error" in answer:
            return await render(request, "failover.html", session, 409, result=answer)
        return RedirectResponse("/?done=failover", status_code=303)

    return pages


class CsrfRejected(Exception):
    pass


STATS_SHOWN = 50  # services drawn on one statistics page (more: one at a time, ?service=)
CHARTS = {  # (field, title, unit) per kind of service
    "proxied": (
        ("requests", "requests/s", ""),
        ("http_5xx", "5xx answers/s", ""),
        ("bytes_out", "bytes/s to clients", "B"),
        ("response_ms", "response time", " ms"),
        ("current", "open connections", ""),
    ),
    "l4": (
        ("connections", "new connections/s", ""),
        ("bytes_out", "bytes/s to clients", "B"),
        ("bytes_in", "bytes/s from clients", "B"),
        ("current", "open connections", ""),
    ),
}


def _pick(series: list, field: str) -> list[tuple[float, float]]:
    return [(t, p[field]) for t, p in series if field in p]


def _cert_errors(error: EditError) -> dict[str, list[str]]:
    """A refused upload's problems by form field (chain, key, name), the rest general."""
    if not isinstance(error, Invalid):
        return {"general": [error.message]}
    errors: dict[str, list[str]] = {}
    for p in error.problems:
        loc = p.loc[2:] if p.loc[:1] == ("certificate",) else p.loc
        field = str(loc[0]) if loc and loc[0] in ("chain", "key", "name") else "general"
        errors.setdefault(field, []).append(p.why if field != "general" else str(p))
    return errors


def _vs_errors(error: EditError) -> dict[str, list[str]]:
    """A refusal of the service form, next to its fields."""
    if isinstance(error, Invalid):
        return vs_problems(error.problems, error.subject)
    if isinstance(error, AlreadyExists):
        return {"name": [error.message]}
    return {"general": [error.message]}


def _ha_errors(error: EditError) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    for p in error.problems if isinstance(error, Invalid) else ():
        field = p.loc[1] if p.loc[:1] == ("ha",) and len(p.loc) == 2 else None
        if field in HA_FIELDS:
            errors.setdefault(str(field), []).append(p.why)
        else:
            errors.setdefault("general", []).append(str(p))
    return errors or {"general": [error.message]}


def _find(doc: dict, name: str) -> dict | None:
    return next((v for v in doc.get("virtual_service", []) if v["name"] == name), None)


def _health(ctx: WebContext) -> dict:
    return {(h["service"], h["address"], h["port"]): h for h in ctx.servers()}


def _vs_form(vs: dict) -> dict:
    return {
        "name": vs["name"],
        "address": vs["address"],
        "port": str(vs["port"]),
        "protocol": vs["protocol"],
        "type": vs["type"],
        "scheduler": vs["scheduler"],
        "persistence": str(vs["persistence"]),
        "drain_timeout": str(vs.get("drain_timeout", 0)),
        "check_type": vs["check"]["type"],
        "check_path": vs["check"]["path"],
        "real_servers": servers_text(vs),
        "certificate": ", ".join(vs.get("certificate", [])),
        "tls_profile": vs.get("tls_profile", "intermediate"),
        "hsts": str(vs.get("hsts", 0)),
        "redirect_http": "on" if vs.get("redirect_http") else "",
        "backend_tls": "on" if vs.get("backend_tls") else "",
        "backend_ca": vs.get("backend_ca", ""),
        "content": content_text(vs),
    }


def _live_data(ctx: WebContext) -> dict:
    doc = ctx.document()
    stats = ctx.unit.stats()
    traffic = {vs["name"]: stats.latest(vs["name"]) for vs in doc.get("virtual_service", [])}
    return {"services": doc.get("virtual_service", []), "health": _health(ctx), "traffic": traffic}
