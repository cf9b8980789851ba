"""The REST API under /api/v1/ (OpenAPI at /api/openapi.json). Every change goes through the
daemon's config handlers: the same validation, history and sync as `carpool config`.

Errors: 401 no or wrong credentials, 403 missing CSRF token (browser sessions), 404 no such
thing, 409 this unit is the standby (the message names the active unit), 422 invalid input with
the field named, 429 too many failed logins."""
from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from pydantic import BaseModel, BeforeValidator, ConfigDict

from ..config.document import RealServer, VirtualService, _lists_to_tuples
from .auth import peer_token_ok
from .context import WebContext, api_user
from .partner import PEER_HEADER

INVALID = "invalid configuration, nothing changed:"
VsBody = Annotated[VirtualService, BeforeValidator(_lists_to_tuples)]
RsBody = Annotated[RealServer, BeforeValidator(_lists_to_tuples)]


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


class Failover(_Body):
    confirm: Literal[True] = True


def _loc(key: str, strip: str = "") -> list:
    if strip and key.startswith(strip):
        key = key[len(strip):].lstrip(".")
    loc: list = ["body"]
    for part in filter(None, key.split(".")):
        m = re.fullmatch(r"(\w+)\[(\d+)\]", part)
        loc += [m[1], int(m[2])] if m else [part]
    return loc


def answer_or_raise(ctx: WebContext, answer: dict, strip: str = "") -> dict:
    """A config handler's answer, or the HTTP error it means."""
    error = answer.get("error")
    if error is None:
        return answer
    if not ctx.is_active():
        raise HTTPException(409, {"message": error, "active": ctx.partner.url})
    if error.startswith(INVALID):
        problems = error[len(INVALID):].strip().splitlines()
        raise HTTPException(422, [{"loc": _loc(p.partition(": ")[0], strip),
                                   "msg": p.partition(": ")[2] or p, "type": "value_error"}
                                  for p in problems])
    raise HTTPException(400, error)


def router() -> APIRouter:
    api = APIRouter(prefix="/api/v1")
    auth = [Depends(api_user)]

    def ctx_of(request: Request) -> WebContext:
        return request.app.state.ctx

    async def apply(ctx: WebContext, doc: dict, who: str, strip: str = "") -> dict:
        return answer_or_raise(ctx, await ctx.call("config.apply", document=doc, who=who), strip)

    def find(doc: dict, name: str) -> tuple[int, dict]:
        for n, vs in enumerate(doc.get("virtual_service", [])):
            if vs["name"] == name:
                return n, vs
        raise HTTPException(404, f"no virtual service {name!r}")

    def health_of(ctx: WebContext, vs: dict) -> list[dict]:
        servers = ctx.servers()
        return [s for s in servers if s["service"] == vs["name"]]

    # -- status ----------------------------------------------------------------------------
    @api.get("/status", dependencies=auth, summary="This unit's HA status (as `carpool status`)")
    async def status(request: Request) -> dict:
        return ctx_of(request).status()

    @api.get("/pair", dependencies=auth, summary="Both units: role, icon, status, WUI address")
    async def pair(request: Request) -> list[dict]:
        return await ctx_of(request).pair()

    @api.get("/events", dependencies=auth, summary="Event log: transitions, sync, health, logins")
    async def events(request: Request, kind: str | None = None, since: int = Query(0, ge=0),
                     limit: int = Query(200, ge=1, le=500)) -> list[dict]:
        return ctx_of(request).events.recent(kind, since, limit)

    @api.post("/failover", summary="Force failover: the active unit steps down gracefully")
    async def failover(request: Request, body: Failover | None = None,
                       user: str = Depends(api_user)) -> dict:
        ctx = ctx_of(request)
        answer = await ctx.failover(f"api ({user})")
        if "error" in answer:
            raise HTTPException(409, answer["error"])
        return answer

    @api.get("/doctor", dependencies=auth,
             summary="Run carpool doctor: every HA prerequisite checked with the partner")
    async def doctor(request: Request) -> dict:
        answer = await ctx_of(request).doctor()
        return {"checks": answer["checks"], "ok": all(c["ok"] for c in answer["checks"])}

    # -- configuration ---------------------------------------------------------------------
    @api.get("/config", dependencies=auth, summary="The current version and document")
    async def config_show(request: Request) -> dict:
        return await ctx_of(request).call("config.show")

    @api.put("/config", summary="Replace the whole document (a new version)")
    async def config_apply(request: Request, body: ConfigApply,
                           user: str = Depends(api_user)) -> dict:
        return await apply(ctx_of(request), body.document, f"api ({user}): config apply",
                           strip="")

    @api.patch("/config", summary="Set one dotted key, e.g. appliance.description")
    async def config_set(request: Request, body: ConfigSet,
                         user: str = Depends(api_user)) -> dict:
        ctx = ctx_of(request)
        return answer_or_raise(ctx, await ctx.call("config.set", key=body.key, value=body.value,
                                                   who=f"api ({user}): set {body.key}"))

    @api.get("/config/history", dependencies=auth, summary="Kept versions, conflicts marked")
    async def config_history(request: Request) -> dict:
        return await ctx_of(request).call("config.history")

    @api.get("/config/diff", dependencies=auth, summary="Changes between two versions")
    async def config_diff(request: Request, a: str | None = None, b: str | None = None) -> dict:
        answer = await ctx_of(request).call("config.diff", a=a, b=b)
        if "error" in answer:
            raise HTTPException(404, answer["error"])
        return answer

    @api.post("/config/rollback", summary="Make an old version current again (a new version)")
    async def config_rollback(request: Request, body: Rollback,
                              user: str = Depends(api_user)) -> dict:
        ctx = ctx_of(request)
        known = {r["version"] for r in (await ctx.call("config.history"))["history"]}
        if body.version not in known:
            raise HTTPException(404, f"no version {body.version} in the history")
        return answer_or_raise(ctx, await ctx.call("config.rollback", version=body.version,
                                                   who=f"api ({user})"))

    # -- virtual services ------------------------------------------------------------------
    @api.get("/virtual-services", dependencies=auth, summary="Services with real-server health")
    async def vs_list(request: Request) -> list[dict]:
        ctx = ctx_of(request)
        return [{**vs, "health": health_of(ctx, vs)}
                for vs in ctx.document().get("virtual_service", [])]

    @api.get("/virtual-services/{name}", dependencies=auth)
    async def vs_get(request: Request, name: str) -> dict:
        ctx = ctx_of(request)
        _, vs = find(ctx.document(), name)
        return {**vs, "health": health_of(ctx, vs)}

    @api.post("/virtual-services", status_code=201, summary="Add a virtual service")
    async def vs_add(request: Request, body: VsBody, user: str = Depends(api_user)) -> dict:
        ctx = ctx_of(request)
        doc = ctx.document()
        services = doc.setdefault("virtual_service", [])
        if any(v["name"] == body.name for v in services):
            raise HTTPException(409, f"virtual service {body.name!r} exists; PUT changes it")
        services.append(body.model_dump(mode="json"))
        return await apply(ctx, doc, f"api ({user}): vs add {body.name}",
                           strip=f"virtual_service[{len(services) - 1}]")

    @api.put("/virtual-services/{name}", summary="Replace a virtual service")
    async def vs_put(request: Request, name: str, body: VsBody,
                     user: str = Depends(api_user)) -> dict:
        ctx = ctx_of(request)
        doc = ctx.document()
        n, _ = find(doc, name)
        doc["virtual_service"][n] = body.model_dump(mode="json")
        return await apply(ctx, doc, f"api ({user}): vs set {name}",
                           strip=f"virtual_service[{n}]")

    @api.delete("/virtual-services/{name}", summary="Remove a virtual service")
    async def vs_delete(request: Request, name: str, user: str = Depends(api_user)) -> dict:
        ctx = ctx_of(request)
        doc = ctx.document()
        n, _ = find(doc, name)
        del doc["virtual_service"][n]
        return await apply(ctx, doc, f"api ({user}): vs rm {name}")

    @api.get("/virtual-services/{name}/real-servers", dependencies=auth)
    async def rs_list(request: Request, name: str) -> list[dict]:
        ctx = ctx_of(request)
        _, vs = find(ctx.document(), name)
        health = {(h["address"], h["port"]): h for h in health_of(ctx, vs)}
        return [{**rs, "health": health.get((rs["address"], rs["port"]))}
                for rs in vs["real_server"]]

    @api.post("/virtual-services/{name}/real-servers", status_code=201,
              summary="Add a real server")
    async def rs_add(request: Request, name: str, body: RsBody,
                     user: str = Depends(api_user)) -> dict:
        ctx = ctx_of(request)
        doc = ctx.document()
        n, vs = find(doc, name)
        if any((r["address"], r["port"]) == (body.address, body.port) for r in vs["real_server"]):
            raise HTTPException(409, f"{name} has {body.address}:{body.port} already")
        vs["real_server"].append(body.model_dump(mode="json"))
        k = len(vs["real_server"]) - 1
        return await apply(ctx, doc, f"api ({user}): rs add {name} {body.address}:{body.port}",
                           strip=f"virtual_service[{n}].real_server[{k}]")

    def find_rs(vs: dict, address: str, port: int) -> int:
        for k, rs in enumerate(vs["real_server"]):
            if (rs["address"], rs["port"]) == (address, port):
                return k
        raise HTTPException(404, f"{vs['name']} has no real server {address}:{port}")

    @api.put("/virtual-services/{name}/real-servers/{address}/{port}",
             summary="Replace a real server (weight, enabled)")
    async def rs_put(request: Request, name: str, address: str, port: int, body: RsBody,
                     user: str = Depends(api_user)) -> dict:
        ctx = ctx_of(request)
        doc = ctx.document()
        n, vs = find(doc, name)
        k = find_rs(vs, address, port)
        vs["real_server"][k] = body.model_dump(mode="json")
        return await apply(ctx, doc, f"api ({user}): rs set {name} {address}:{port}",
                           strip=f"virtual_service[{n}].real_server[{k}]")

    @api.delete("/virtual-services/{name}/real-servers/{address}/{port}",
                summary="Remove a real server")
    async def rs_delete(request: Request, name: str, address: str, port: int,
                        user: str = Depends(api_user)) -> dict:
        ctx = ctx_of(request)
        doc = ctx.document()
        _, vs = find(doc, name)
        del vs["real_server"][find_rs(vs, address, port)]
        return await apply(ctx, doc, f"api ({user}): rs rm {name} {address}:{port}")

    # -- between the units -----------------------------------------------------------------
    @api.get("/peer/status", include_in_schema=False)
    async def peer_status(request: Request, response: Response) -> dict:
        ctx = ctx_of(request)
        if not peer_token_ok(ctx.cfg.secret, request.headers.get(PEER_HEADER)):
            raise HTTPException(401, "peer token missing or wrong (partner secret)")
        return ctx.status()

    return api
