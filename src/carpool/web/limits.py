"""How much a client may send, judged before the app reads it (the WUI shares the election's
event loop: a body read and parsed there takes the loop's time).

`BodyLimit` (ASGI middleware, before FastAPI, which reads and parses a body before it runs a
route's authentication): a request whose Content-Length is over its limit is answered 413 at
once, nothing of the body read; a body without a length (chunked) is counted as it streams in
and cut off with 413 when it passes the limit; a body still arriving after `deadline` seconds
is cut off with 408. The limit is `small` (before authentication, e.g. a login form) unless
`large_allowed(request)` says the request is an authenticated config write (an admin's), asked
only of a body that may be bigger than `small`. Each refusal closes the connection (uvicorn
would otherwise read and drop the rest of the body)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

KiB = 1024
SMALL = 64 * KiB  # any request before authentication: a login form, an API call's JSON
LARGE = 8 * 1024 * KiB  # an admin's config write (a whole document); sync frames are 64 MiB
BODY_DEADLINE = 30.0  # s for a whole body, once the headers are in


class BodyRefused(HTTPException):
    """A body over its limit (413) or too slow (408), raised from receive() inside the app:
    FastAPI passes an HTTPException raised while it reads the body on to its handler."""

    def __init__(self, status: int, detail: str):
        super().__init__(status, detail, headers={"Connection": "close"})


def too_large(limit: int) -> BodyRefused:
    return BodyRefused(
        413,
        f"request body over {limit // KiB} KiB"
        + (
            f" (up to {LARGE // KiB // 1024} MiB only for an admin's configuration change)"
            if limit < LARGE
            else ""
        ),
    )


def content_length(scope: Scope) -> int | None:
    """The declared length; None without one (no body, or chunked); -1 if malformed."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else -1
    return None


def chunked(scope: Scope) -> bool:
    return any(name == b"transfer-encoding" for name, _ in scope["headers"])


class BodyLimit:
    def __init__(
        self,
        app: ASGIApp,
        large_allowed: Callable[[Request], Awaitable[bool]],
        small: int = SMALL,
        large: int = LARGE,
        deadline: float = BODY_DEADLINE,
    ):
        self.app = app
        self.large_allowed = large_allowed
        self.small, self.large, self.deadline = small, large, deadline

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = content_length(scope)
        if length == -1:
            await _answer(scope, send, BodyRefused(400, "malformed Content-Length"))
            return
        limit = self.small
        if (length is not None and length > self.small) or (length is None and chunked(scope)):
            if length is not None and length > self.large:
                await _answer(scope, send, too_large(self.large))
                return
            try:
                if await self.large_allowed(Request(scope)):
                    limit = self.large
            except HTTPException as e:  # 429: the address is blocked
                await _answer(scope, send, e)
                return
        if length is not None and length > limit:
            await _answer(scope, send, too_large(limit))
            return
        await self._run(scope, receive, send, limit)

    async def _run(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        received = 0
        more = True
        deadline = asyncio.get_running_loop().time() + self.deadline
        started = False

        async def limited() -> Message:
            nonlocal received, more
            if not more:  # the body is in: what follows is the disconnect, whenever it comes
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise BodyRefused(408, "the request body came too slowly") from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise too_large(limit)
                more = message.get("more_body", False)
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited, tracked)
        except BodyRefused as e:  # raised where no handler turned it into the answer
            if started:
                raise
            await _answer(scope, send, e)


async def _answer(scope: Scope, send: Send, error: HTTPException) -> None:
    headers: dict[str, Any] = {"Connection": "close", **(error.headers or {})}
    response = JSONResponse({"detail": error.detail}, error.status_code, headers=headers)
    await response(scope, _nothing, send)


async def _nothing() -> Message:
    return {"type": "http.disconnect"}
