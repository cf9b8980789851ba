"""The FastAPI application of one unit: pages, REST API, /metrics, static files."""

from __future__ import annotations

import html
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from ..config.document import _Problems as Problems
from . import api, pages
from .context import Forbidden, LoginRequired, WebContext, viewer
from .limits import BodyLimit

try:
    __version__ = version("carpool")
except PackageNotFoundError:
    __version__ = "0"
HERE = Path(__file__).resolve().parent
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Strict-Transport-Security": "max-age=31536000",
    "Cache-Control": "no-store",
}


def create_app(ctx: WebContext) -> FastAPI:
    app = FastAPI(
        title="carpool",
        version=__version__,
        description="REST API of one carpool unit. Scripts: HTTP Basic; a POST is sent as "
        "JSON or with an X-Requested-With header. Changes are made on the active unit (409 on "
        "the standby names it).",
        openapi_url=None,  # served below, behind the login
        docs_url=None,
        redoc_url=None,
    )
    app.state.ctx = ctx
    # no body is read before it; the security headers (added later: outside it) reach its answers
    app.add_middleware(BodyLimit, large_allowed=ctx.may_send_large)

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @app.exception_handler(LoginRequired)
    async def to_login(request: Request, _exc: LoginRequired):
        return RedirectResponse("/login", status_code=303)

    @app.exception_handler(pages.CsrfRejected)
    async def csrf_rejected(request: Request, _exc):
        return HTMLResponse(
            "<h1>Refused</h1><p>The form's CSRF token is missing or stale: "
            "reload the page and try again.</p>",
            status_code=403,
        )

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        # pydantic's list, with each error's field path kept (loc) and the input left out
        # (it may hold a password).
        detail = []
        for e in exc.errors():
            inner = (e.get("ctx") or {}).get("error")
            if isinstance(inner, Problems):  # a model's cross-field check: each at its key
                detail += [
                    {"loc": [*e["loc"], *p.loc], "msg": p.why, "type": "value_error"}
                    for p in inner.problems
                ]
            else:
                detail.append({"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]})
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, exc: Forbidden):
        return HTMLResponse(f"<h1>Refused</h1><p>{html.escape(str(exc))}.</p>", status_code=403)

    @app.get("/api/openapi.json", include_in_schema=False)
    async def openapi(_user: str = Depends(viewer)) -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request, _user: str = Depends(viewer)) -> Response:
        nft, stats = await ctx.unit.dataplane_counters()
        body = ctx.metrics.render(ctx.status(), nft, stats)
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    app.include_router(api.router())
    app.include_router(pages.router(), include_in_schema=False)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    return app
