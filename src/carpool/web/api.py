"""The REST API under /api/v1/ (OpenAPI at /api/openapi.json). Every change is an operation
of config/edit.py that the daemon applies: the same validation, history and sync as `carpool
config`. A change may name the version it was made against (`?expect_version=N`).

Who may: a viewer reads (and /metrics), an operator also fails over and enables or disables real
servers, an admin does everything (and alone reads the document, which holds the password
hashes). A POST by HTTP Basic is JSON or carries X-Requested-With (so no other site's page can
make one with a browser's cached credentials; PUT, PATCH, DELETE it cannot make anyway).

Errors: 401 no or wrong credentials, 403 missing CSRF token (browser sessions), a change by
Basic POST that is neither JSON nor X-Requested-With, a change from another site (Sec-Fetch-Site),
or a role too weak; 413 a body over 64 KiB (8 MiB for an admin's change); 429 too many
failed logins, and the daemon's typed refusals by STATUS: 404 no such thing, 409 this unit is the
standby (the answer names the active unit), the thing exists already, or the configuration
changed since expect_version; 422 invalid input with the field named; 400 anything else."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from pydantic import BaseModel, BeforeValidator, ConfigDict

from ..config import certs
from ..config.document import Loc, RealServer, VirtualService, _lists_to_tuples
from ..config.edit import (
    AddCertificate,
    AddRealServer,
    AddVirtualService,
    AlreadyExists,
    Conflict,
    EditError,
    Invalid,
    NotFound,
    Refused,
    RemoveCertificate,
    RemoveRealServer,
    RemoveVirtualService,
    ReplaceCertificate,
    ReplaceRealServer,
    ReplaceVirtualService,
    SetKey,
    SetRealServer,
    Standby,
    error_of,
)
from .auth import peer_token_ok
from .context import WebContext, admin, operator, viewer
from .partner import PEER_HEADER

VsBody = Annotated[VirtualService, BeforeValidator(_lists_to_tuples)]
RsBody = Annotated[RealServer, BeforeValidator(_lists_to_tuples)]
Expect = Annotated[
    int | None,
    Query(description="apply only if the configuration is still at this version (else 409)"),
]
STATUS: dict[type[EditError], int] = {
    NotFound: 404,
    AlreadyExists: 409,
    Conflict: 409,
    Standby: 409,
    Invalid: 422,
    Refused: 400,
}


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ConfigSet(_Body):
    key: str
    value: Any = None


class ConfigApply(_Body):
    document: dict


class Rollback(_Body):
    model_config = ConfigDict(extra="forbid", strict=True)
    version: int


class CertificateBody(_Body):
    name: str
    chain: str  # PEM, leaf first
    key: str = ""  # PEM private key; "" for CA certificates (backend_ca)


class CertificateRenewal(_Body):
    chain: str
    key: str = ""  # "": the stored key stays


class Failover(_Body):
    confirm: Literal[True] = True


def status_of(error: EditError) -> int:
    return next((STATUS[c] for c in type(error).__mro__ if c in STATUS), 400)


def _inside(loc: Loc, subject: Loc) -> list:
    """A problem's place relative to the request body (the edited item)."""
    return list(loc[len(subject) :] if subject and loc[: len(subject)] == subject else loc)


def http_error(error: EditError, active_url: str) -> HTTPException:
    """The HTTP answer to a typed refusal."""
    status = status_of(error)
    if isinstance(error, Invalid):
        return HTTPException(
            status,
            [
                {
                    "loc": ["body", *_inside(p.loc, error.subject)],
                    "msg": p.why,
                    "type": "value_error",
                }
                for p in error.problems
            ],
        )
    if isinstance(error, Standby):
        return HTTPException(status, {"message": error.message, "active": active_url})
    if isinstance(error, Conflict):
        return HTTPException(
            status,
            {
                "message": error.message,
                "expected_version": error.expected_version,
                "current_version": error.current_version,
            },
        )
    return HTTPException(status, error.message)


def answer_or_raise(ctx: WebContext, answer: dict) -> dict:
    """A config handler's answer, or the HTTP error it means."""
    error = error_of(answer)
    if error is None:
        return answer
    raise http_error(error, ctx.partner.url)


def router() -> APIRouter:
    api = APIRouter(prefix="/api/v1")
    # who may: viewer (reading), operator (also failover, real servers on and off), admin (all)
    read = [Depends(viewer)]

    def ctx_of(request: Request) -> WebContext:
        return request.app.state.ctx

    async def edit(request: Request, user: str, *ops, expect: int | None = None) -> dict:
        ctx = ctx_of(request)
        return answer_or_raise(ctx, await ctx.edit(f"api ({user})", *ops, expect_version=expect))

    def find(doc: dict, name: str) -> dict:
        for vs in doc.get("virtual_service", []):
            if vs["name"] == name:
                return vs
        raise HTTPException(404, f"no virtual service {name!r}")

    def health_of(ctx: WebContext, vs: dict) -> list[dict]:
        servers = ctx.servers()
        return [s for s in servers if s["service"] == vs["name"]]

    # -- status ----------------------------------------------------------------------------
    @api.get("/status", dependencies=read, summary="This unit's HA status (as `carpool status`)")
    async def status(request: Request) -> dict:
        return ctx_of(request).status()

    @api.get("/pair", dependencies=read, summary="Both units: role, icon, status, WUI address")
    async def pair(request: Request) -> list[dict]:
        return await ctx_of(request).pair()

    @api.get("/events", dependencies=read, summary="Event log: transitions, sync, health, logins")
    async def events(
        request: Request,
        kind: str | None = None,
        since: int = Query(0, ge=0),
        limit: int = Query(200, ge=1, le=500),
        q: str = Query("", max_length=200, description="only events whose text contains this"),
    ) -> list[dict]:
        return ctx_of(request).events.recent(kind, since, limit, q)

    @api.post("/failover", summary="Force failover: the active unit steps down gracefully")
    async def failover(
        request: Request, body: Failover | None = None, user: str = Depends(operator)
    ) -> dict:
        ctx = ctx_of(request)
        answer = await ctx.failover(f"api ({user})")
        if "error" in answer:
            raise HTTPException(409, answer["error"])
        return answer

    @api.get(
        "/doctor",
        dependencies=[Depends(operator)],
        summary="Run carpool doctor: every HA prerequisite checked with the partner",
    )
    async def doctor(request: Request) -> dict:
        answer = await ctx_of(request).doctor()
        return {"checks": answer["checks"], "ok": all(c["ok"] for c in answer["checks"])}

    # -- configuration ---------------------------------------------------------------------
    @api.get(
        "/config",
        dependencies=[Depends(admin)],
        summary="The current version and document (admin: it holds the password hashes)",
    )
    async def config_show(request: Request) -> dict:
        return await ctx_of(request).call("config.show")

    @api.put("/config", summary="Replace the whole document (a new version)")
    async def config_apply(request: Request, body: ConfigApply, user: str = Depends(admin)) -> dict:
        ctx = ctx_of(request)
        return answer_or_raise(
            ctx,
            await ctx.call(
                "config.apply", document=body.document, who=f"api ({user}): config apply"
            ),
        )

    @api.patch("/config", summary="Set one dotted key, e.g. appliance.description")
    async def config_set(
        request: Request,
        body: ConfigSet,
        expect_version: Expect = None,
        user: str = Depends(admin),
    ) -> dict:
        return await edit(request, user, SetKey(body.key, body.value), expect=expect_version)

    @api.get("/config/history", dependencies=read, summary="Kept versions, conflicts marked")
    async def config_history(request: Request) -> dict:
        return await ctx_of(request).call("config.history")

    @api.get(
        "/config/diff",
        dependencies=[Depends(admin)],
        summary="Changes between two versions (admin: they may show password hashes)",
    )
    async def config_diff(request: Request, a: str | None = None, b: str | None = None) -> dict:
        ctx = ctx_of(request)
        return answer_or_raise(ctx, await ctx.call("config.diff", a=a, b=b))

    @api.post("/config/rollback", summary="Make an old version current again (a new version)")
    async def config_rollback(request: Request, body: Rollback, user: str = Depends(admin)) -> dict:
        ctx = ctx_of(request)
        return answer_or_raise(
            ctx, await ctx.call("config.rollback", version=body.version, who=f"api ({user})")
        )

    # -- statistics --------------------------------------------------------------------------
    @api.get(
        "/stats",
        dependencies=read,
        summary="Traffic per service and real server: the latest rates and gauges of each, "
        "or one key's series over the range",
    )
    async def stats(
        request: Request,
        range: Literal["1h", "24h"] = "1h",
        key: str | None = Query(None, max_length=300, description="one service or server"),
    ) -> dict:
        data = ctx_of(request).unit.stats()
        answer: dict = {"range": range, "step": data.ranges[range][0]}
        if key:  # one series at a time: all of them would be megabytes
            answer["series"] = data.as_json(range, [key])
        else:
            answer["latest"] = {k: data.latest(k) for k in data.names()}
        return answer

    # -- certificates ----------------------------------------------------------------------
    def cert_rows(request: Request) -> list[dict]:
        return certs.rows(ctx_of(request).unit.document(), time.time())

    @api.get(
        "/certificates",
        dependencies=read,
        summary="Certificates: names, dates, days left, what uses them (never a key)",
    )
    async def cert_list(request: Request) -> list[dict]:
        return cert_rows(request)

    @api.get("/certificates/{name}", dependencies=read)
    async def cert_get(request: Request, name: str) -> dict:
        for row in cert_rows(request):
            if row["name"] == name:
                return row
        raise HTTPException(404, f"no certificate {name!r}")

    @api.post(
        "/certificates",
        status_code=201,
        summary="Upload a certificate: PEM chain (leaf first) and key (kept on the units only)",
    )
    async def cert_add(
        request: Request,
        body: CertificateBody,
        expect_version: Expect = None,
        user: str = Depends(admin),
    ) -> dict:
        op = AddCertificate(body.name, body.chain, body.key)
        return await edit(request, user, op, expect=expect_version)

    @api.put(
        "/certificates/{name}", summary="Renew a certificate (the stored key stays if none is sent)"
    )
    async def cert_replace(
        request: Request,
        name: str,
        body: CertificateRenewal,
        expect_version: Expect = None,
        user: str = Depends(admin),
    ) -> dict:
        op = ReplaceCertificate(name, body.chain, body.key)
        return await edit(request, user, op, expect=expect_version)

    @api.delete("/certificates/{name}", summary="Remove a certificate no service uses")
    async def cert_remove(
        request: Request, name: str, expect_version: Expect = None, user: str = Depends(admin)
    ) -> dict:
        return await edit(request, user, RemoveCertificate(name), expect=expect_version)

    # -- virtual services ------------------------------------------------------------------
    @api.get("/virtual-services", dependencies=read, summary="Services with real-server health")
    async def vs_list(request: Request) -> list[dict]:
        ctx = ctx_of(request)
        return [
            {**vs, "health": health_of(ctx, vs)} for vs in ctx.document().get("virtual_service", [])
        ]

    @api.get("/virtual-services/{name}", dependencies=read)
    async def vs_get(request: Request, name: str) -> dict:
        ctx = ctx_of(request)
        vs = find(ctx.document(), name)
        return {**vs, "health": health_of(ctx, vs)}

    @api.post("/virtual-services", status_code=201, summary="Add a virtual service")
    async def vs_add(
        request: Request, body: VsBody, expect_version: Expect = None, user: str = Depends(admin)
    ) -> dict:
        return await edit(
            request, user, AddVirtualService(body.model_dump(mode="json")), expect=expect_version
        )

    @api.put("/virtual-services/{name}", summary="Replace a virtual service")
    async def vs_put(
        request: Request,
        name: str,
        body: VsBody,
        expect_version: Expect = None,
        user: str = Depends(admin),
    ) -> dict:
        return await edit(
            request,
            user,
            ReplaceVirtualService(name, body.model_dump(mode="json")),
            expect=expect_version,
        )

    @api.delete("/virtual-services/{name}", summary="Remove a virtual service")
    async def vs_delete(
        request: Request, name: str, expect_version: Expect = None, user: str = Depends(admin)
    ) -> dict:
        return await edit(request, user, RemoveVirtualService(name), expect=expect_version)

    @api.get("/virtual-services/{name}/real-servers", dependencies=read)
    async def rs_list(request: Request, name: str) -> list[dict]:
        ctx = ctx_of(request)
        vs = find(ctx.document(), name)
        health = {(h["address"], h["port"]): h for h in health_of(ctx, vs)}
        return [
            {**rs, "health": health.get((rs["address"], rs["port"]))} for rs in vs["real_server"]
        ]

    @api.post("/virtual-services/{name}/real-servers", status_code=201, summary="Add a real server")
    async def rs_add(
        request: Request,
        name: str,
        body: RsBody,
        expect_version: Expect = None,
        user: str = Depends(admin),
    ) -> dict:
        return await edit(
            request, user, AddRealServer(name, body.model_dump(mode="json")), expect=expect_version
        )

    @api.put(
        "/virtual-services/{name}/real-servers/{address}/{port}",
        summary="Replace a real server (weight, enabled)",
    )
    async def rs_put(
        request: Request,
        name: str,
        address: str,
        port: int,
        body: RsBody,
        expect_version: Expect = None,
        user: str = Depends(admin),
    ) -> dict:
        op = ReplaceRealServer(name, address, port, body.model_dump(mode="json"))
        return await edit(request, user, op, expect=expect_version)

    @api.delete(
        "/virtual-services/{name}/real-servers/{address}/{port}", summary="Remove a real server"
    )
    async def rs_delete(
        request: Request,
        name: str,
        address: str,
        port: int,
        expect_version: Expect = None,
        user: str = Depends(admin),
    ) -> dict:
        return await edit(
            request, user, RemoveRealServer(name, address, port), expect=expect_version
        )

    async def switch(request: Request, name: str, address: str, port: int, user: str, on: bool):
        return await edit(request, user, SetRealServer(name, address, port, "enabled", on))

    @api.post(
        "/virtual-services/{name}/real-servers/{address}/{port}/enable",
        summary="Put a real server back in service (operator)",
    )
    async def rs_enable(
        request: Request, name: str, address: str, port: int, user: str = Depends(operator)
    ) -> dict:
        return await switch(request, name, address, port, user, True)

    @api.post(
        "/virtual-services/{name}/real-servers/{address}/{port}/disable",
        summary="Take a real server out of service (operator)",
    )
    async def rs_disable(
        request: Request, name: str, address: str, port: int, user: str = Depends(operator)
    ) -> dict:
        return await switch(request, name, address, port, user, False)

    # -- between the units -----------------------------------------------------------------
    @api.get("/peer/status", include_in_schema=False)
    async def peer_status(request: Request, response: Response) -> dict:
        ctx = ctx_of(request)
        if not peer_token_ok(ctx.cfg.secret, request.headers.get(PEER_HEADER)):
            raise HTTPException(401, "peer token missing or wrong (partner secret)")
        return ctx.status()

    return api
