"""The control socket: one JSON request per line in, one JSON answer per line out.

`carpool status` and the lab use it; the daemon registers handlers by command name. Who may
connect is checked twice: by the socket's file mode (0600 root, or 0660 and the group of
`unit.control_group`) and by the peer's credentials (SO_PEERCRED, SO_PEERGROUPS): root, or a
member of that group. Anyone else gets one JSON error line and the connection closes, unread;
the refusal is counted (`Access.refused`) and logged at most once per LOG_EVERY seconds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import struct
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from .. import untrusted

log = logging.getLogger("carpool.control")
Handler = Callable[[dict], Coroutine[Any, Any, dict] | dict]  # a function or a coroutine function
MAX_REQUEST = 64 * 1024 * 1024  # a whole configuration document fits
LOG_EVERY = 10.0  # seconds between two log lines about refused peers
REFUSED_READ = 64 * 1024  # bytes of a refused peer's request dropped before closing anyway
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)  # Linux >= 4.13
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


@dataclass(frozen=True)
class Peer:
    """The connecting process's credentials, as the kernel took them at connect()."""

    pid: int
    uid: int
    gid: int
    groups: tuple[int, ...]  # its supplementary groups (empty if the kernel cannot say)


def peer_of(sock: Any) -> Peer:
    """The credentials of a connected Unix socket's peer (OSError if none)."""
    pid, uid, gid = _UCRED.unpack(
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    )
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 1024)  # up to 256 groups
        groups = tuple(struct.unpack(f"{len(raw) // 4}I", raw[: len(raw) // 4 * 4]))
    except OSError:  # an older kernel, or more groups than fit: the primary group only
        groups = ()
    return Peer(pid, uid, gid, groups)


class Access:
    """Who may use the control socket: root, and the members of `group` (a gid; None: root
    only). Counts and logs (rate-limited) the peers it refuses."""

    def __init__(
        self, group: int | None = None, group_name: str = "", clock=time.monotonic
    ) -> None:
        self.group, self.group_name = group, group_name or (str(group) if group is not None else "")
        self.clock = clock
        self.refused = 0
        self._last_log = float("-inf")

    def allows(self, peer: Peer) -> bool:
        if peer.uid == 0:
            return True
        return self.group is not None and (peer.gid == self.group or self.group in peer.groups)

    @property
    def who(self) -> str:
        return "root" + (f" and group {self.group_name}" if self.group is not None else "")

    def refuse(self, peer: Peer | None) -> dict:
        """Count a refused peer (None: its credentials could not be read); its answer."""
        self.refused += 1
        now = self.clock()
        if now - self._last_log >= LOG_EVERY:  # a looping client must not flood the log
            self._last_log = now
            log.warning(
                "control socket: refused %s: only %s may use it (%d refused so far)",
                "a peer without credentials"
                if peer is None
                else f"uid {peer.uid} gid {peer.gid} (pid {peer.pid})",
                self.who,
                self.refused,
            )
        return {"error": f"permission denied: the control socket is for {self.who} only"}


async def serve(
    path: str, handlers: dict[str, Handler], access: Access | None = None
) -> asyncio.AbstractServer:
    access = Access() if access is None else access
    if os.path.exists(path):
        os.unlink(path)  # a stale socket from a killed daemon

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            peer: Peer | None = peer_of(writer.get_extra_info("socket"))
        except OSError:
            peer = None
        if peer is None or not access.allows(peer):
            await _refuse(reader, writer, access.refuse(peer))
            return
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
    if access.group is None:
        os.chmod(path, 0o600)
    else:
        os.chown(path, -1, access.group)
        os.chmod(path, 0o660)
    return server


async def _refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, answer: dict) -> None:
    """The one error line, then our side shut; what the peer sent is dropped unparsed until
    it closes (closing on unread data would reset the connection before it reads the line)."""
    try:
        writer.write(json.dumps(answer).encode() + b"\n")
        await writer.drain()
        writer.write_eof()
        async with asyncio.timeout(1.0):
            dropped = 0
            while dropped < REFUSED_READ and (chunk := await reader.read(4096)):
                dropped += len(chunk)
    except (TimeoutError, ConnectionError):
        pass
    finally:
        writer.close()


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
