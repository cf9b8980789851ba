"""The control socket: one JSON request per line in, one JSON answer per line out.

`carpool status` and the lab use it; the daemon registers handlers by command name.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from collections.abc import Callable, Coroutine
from typing import Any

from .. import untrusted

log = logging.getLogger("carpool.control")
Handler = Callable[[dict], Coroutine[Any, Any, dict] | dict]  # a function or a coroutine function
MAX_REQUEST = 64 * 1024 * 1024  # a whole configuration document fits


async def serve(path: str, handlers: dict[str, Handler]) -> asyncio.AbstractServer:
    if os.path.exists(path):
        os.unlink(path)  # a stale socket from a killed daemon

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            answer = await _dispatch(line, handlers)
        except (TimeoutError, ConnectionError):
            answer = {"error": "request timed out"}
        except ValueError:  # the line is longer than MAX_REQUEST
            answer = {"error": f"bad request: longer than {MAX_REQUEST} bytes"}
        try:
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_unix_server(client, path, limit=MAX_REQUEST)
    os.chmod(path, 0o600)
    return server


async def _dispatch(line: bytes, handlers: dict[str, Handler]) -> dict:
    try:
        request = untrusted.loads_object(line, max_size=MAX_REQUEST)
        command = request["command"]
        handler = handlers[command]
    except (untrusted.UntrustedJSON, TypeError, KeyError):
        return {"error": f"bad request; commands: {', '.join(sorted(handlers))}"}
    try:
        result = handler(request)
        if asyncio.iscoroutine(result):
            result = await result
        return result
    except Exception as e:  # a bad request must never take the daemon down
        log.exception("control command %s failed", command)
        return {"error": f"{command} failed: {e}"}


def request(path: str, command: str, timeout: float = 3.0, **args) -> dict:
    """Blocking client for the CLI: raises OSError when no daemon listens."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(json.dumps({"command": command, **args}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return json.loads(data)
