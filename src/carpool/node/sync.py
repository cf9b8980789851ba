"""Config sync on TCP 6973 (asyncio adapter around config.syncproto and config.store).

Every unit serves; the active unit also runs the client: it pushes each new version at once,
re-checks (version, hash) every `sync.interval` seconds and on reconnect, and reconciles after a
split by syncproto.plan(). The partner validates every version, stores it atomically, applies it,
then acknowledges. Sync never touches the election: a dead sync channel is "sync down" in status.
"""

from __future__ import annotations

import asyncio
import collections
import secrets
import socket
import time
from collections.abc import Callable
from typing import Protocol

from .. import __version__, events
from ..config import syncproto as sp
from ..config.document import (
    Document,
    DocumentError,
    as_earlier_release_meant,
    parse_document,
)
from ..config.store import Record, Store, StoreError, Version
from ..terms import SyncState
from .limits import RateLimitedLog
from .storeio import StoreWriter, current_version

log = events.logger("carpool.sync", events.Kind.SYNC)
HANDSHAKE_TIMEOUT = 5.0  # the whole handshake, however the peer paces its bytes
MAX_UNAUTHENTICATED = 16  # connections in their handshake at once; more are closed at once
IP_FREEBIND = 15  # linux/in.h (Python 3.11's socket module does not name it)
DOCTOR_CONNECT_TIMEOUT = 2.0
REPLY_TIMEOUT = 10.0  # a 1000-service document takes ~1 s; a stalled path must show soon
RETRY = 1.0
# Messages beyond the first release's, announced in the welcome: a partner that does not list
# one would close the connection on it (an unknown message is a bad frame).
FEATURES = frozenset({"doctor"})
POST_LIMIT = 64 * 1024  # bytes queued to a slow reader before posts to it are dropped


def cancel_requested() -> bool:
    """The running task was asked to stop. Python 3.11's wait_for swallows a cancellation that
    arrives as its awaitable completes (fixed in 3.12): a loop that retries for ever checks
    this each round, or one lost cancel keeps it running (seen as a hang at shutdown)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class SyncRefused(Exception):
    pass


class StalePush(SyncRefused):
    """A push planned against a version the receiver no longer has: plan again. Its error
    reply carries CODE, so the pusher knows without reading the message."""

    CODE = "stale"


class Channel:
    """One authenticated connection: read and write messages (both sides)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer
        self.deframer = sp.Deframer(sp.MAX_HANDSHAKE_FRAME)  # until start_session
        self.pending: collections.deque[bytes] = collections.deque()
        self.session: sp.Session | None = None
        self.features: frozenset[str] = frozenset()  # what the other side said it understands

    def start_session(self, session: sp.Session) -> None:
        """Authenticated: sealed frames from now on, up to MAX_FRAME bytes."""
        self.session = session
        self.deframer.limit = sp.MAX_FRAME

    @property
    def peer(self) -> str:
        peer = self.writer.get_extra_info("peername")
        return peer[0] if peer else "?"

    async def body(self, timeout: float) -> bytes:
        while not self.pending:
            data = await asyncio.wait_for(self.reader.read(1 << 16), timeout)
            if not data:
                raise ConnectionError("connection closed")
            self.pending.extend(self.deframer.feed(data))
        return self.pending.popleft()

    async def recv(self, timeout: float = REPLY_TIMEOUT) -> dict:
        body = await self.body(timeout)
        return self.session.open(body) if self.session else sp.parse_json(body)

    async def send(self, msg: dict) -> None:
        self.writer.write(self.session.seal(msg) if self.session else sp.frame(sp.dumps(msg)))
        await self.writer.drain()

    def post(self, msg: dict) -> bool:
        """Send without waiting (from a callback); False, nothing queued, when the peer does
        not keep up or the connection is closing: memory stays bounded."""
        transport = self.writer.transport
        if (
            self.session is None
            or transport.is_closing()
            or transport.get_write_buffer_size() > POST_LIMIT
        ):
            return False
        self.writer.write(self.session.seal(msg))
        return True

    def close(self) -> None:
        self.writer.close()


def _versions(store: Store, keys) -> list[dict]:
    out = []
    for version, hash_ in keys:
        v = store.get(version, hash_)
        out.append({"record": v.record.to_json(), "document": v.document.wire()})
    return out


def _parse_versions(items) -> list[Version]:
    """Every version validated before any is stored: nothing half-applied."""
    if not isinstance(items, list):
        raise sp.FrameError("garbage", "versions must be a list")
    out = []
    for item in items:
        try:
            record = Record.from_json(item["record"])
            doc = parse_document(item["document"])
        except (KeyError, TypeError, DocumentError, StoreError) as e:  # StoreError: RecordError
            raise SyncRefused(f"invalid version from partner: {str(e)[:1000]}") from None
        if doc.hash != record.hash:
            doc = _as_earlier_release_meant(item["document"], record) or doc
        if doc.hash != record.hash:
            raise SyncRefused(f"version {record.version}: hash does not match its document")
        out.append(Version(record, doc))
    return out


def _as_earlier_release_meant(data: object, record: Record) -> Document | None:
    """The document of a partner of an earlier release, whose defaults it sends and leaves out
    of its hash (100 and 3 for ha.liveness_*), as it meant them: unset. None if that is not
    the document the record names either."""
    earlier = as_earlier_release_meant(data) if isinstance(data, dict) else None
    if earlier is None:
        return None
    try:
        doc = parse_document(earlier)
    except DocumentError:
        return None
    return doc if doc.hash == record.hash else None


def _is_key(value: object) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and type(value[0]) is int
        and isinstance(value[1], str)
    )


def _key_list(value: object, what: str) -> list[tuple[int, str]]:
    """[[version, hash], ...] from the partner, as keys; FrameError if it is anything else."""
    if not isinstance(value, list) or not all(_is_key(k) for k in value):
        raise sp.FrameError("garbage", f"{what}: not a list of [version, hash]")
    return [(k[0], k[1]) for k in value]


def _key_or_none(value: object, what: str) -> tuple[int, str] | None:
    if value is None:
        return None
    if not _is_key(value):
        raise sp.FrameError("garbage", f"{what}: not [version, hash]")
    assert isinstance(value, list)  # _is_key
    return (value[0], value[1])


def _keys(store: Store) -> list[list]:
    return [[r.version, r.hash] for r in store.history(conflicts=False)]


def _current(store: Store) -> list | None:
    return list(store.current.record.key) if store.current else None


def _listener(address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)  # IPv6 sockets take it too
        sock.bind((address, port))
        sock.listen(64)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class Relay(Protocol):
    """What takes the "relay" and "doctor" messages (node/relay.py's AdvertRelay)."""

    def subscribe(self, ch: Channel, msg: dict) -> None: ...
    def doctor(self, ch: Channel, msg: dict) -> None: ...
    def forget(self, ch: Channel) -> None: ...


class SyncService:
    def __init__(
        self,
        secret: bytes,
        role: str,
        store: Store,
        port: int,
        partner: Callable[[], str],
        preferred: Callable[[], str],
        is_active: Callable[[], bool],
        on_apply: Callable[[Version], None],
        ha_state: Callable[[], str] = lambda: "unknown",
        listen: Callable[[], list[str]] = lambda: ["0.0.0.0"],
    ):
        """listen: the addresses to serve on (the unit's own ones: never a shared address)."""
        self.key = sp.sync_key(secret)
        self.listen = listen
        self._unauthenticated = 0
        # a handshake of this protocol succeeded: the partner runs this release's (or a later)
        # sync, so it speaks the carpool advert too (node/advert.py stops answering it in the
        # older form, which it kept doing while the partner was a silent standby)
        self.on_partner: Callable[[], None] = lambda: None
        self.ha_state = ha_state
        # The partner's HA state from its last state answer: {"state", "at"} (wall time).
        # Both units of a master-master pair run the client, so each learns the other's.
        self.partner_ha: dict | None = None
        self.role, self.store, self.port = role, store, port
        self.partner, self.preferred, self.is_active = partner, preferred, is_active
        self.on_apply = on_apply
        self.counters: collections.Counter = collections.Counter()
        self.state = SyncState.IDLE
        self.partner_version: tuple[int, str] | None = None
        self.last_error = ""
        self.last_ok: float | None = None
        self.servers: list[asyncio.base_events.Server] = []
        self._wake = asyncio.Event()
        self._sent = asyncio.Event()  # the push of the last local change is on the wire
        self._sent.set()
        self._theirs: list[tuple[int, str]] | None = None  # the partner's history, last seen
        self._their_current: tuple[int, str] | None = None
        # (version, committed at on the active unit, applied here): the sync latency
        self.applied: collections.deque = collections.deque(maxlen=5000)
        self._task: asyncio.Task | None = None
        self.relay: Relay | None = None  # node.relay's, set by it: "relay" messages go there
        self.writer = StoreWriter(store)  # every store write (ours and configd's) goes here
        # what a partner or a stranger sends may be logged once per kind every 10 s, no more
        self._log = RateLimitedLog(log)

    # -- server side -----------------------------------------------------------------------
    async def start(self) -> None:
        """Serve on each of the unit's own addresses (IP_FREEBIND: also one whose link is
        down now), then run the client. One address that cannot be bound is logged; the
        others serve."""
        for address in self.listen():
            try:
                sock = _listener(address, self.port)
            except OSError as e:
                log.error("config sync cannot listen on %s:%d: %s", address, self.port, e)
                continue
            self.servers.append(await asyncio.start_server(self._serve, sock=sock))
        self._task = asyncio.get_running_loop().create_task(self._client_loop())

    def close(self) -> None:
        for server in self.servers:
            server.close()
        if self._task:
            self._task.cancel()

    async def _serve(self, reader, writer) -> None:
        ch = Channel(reader, writer)
        if self._unauthenticated >= MAX_UNAUTHENTICATED:
            self.counters["refused_busy"] += 1
            self._log.warning(
                "busy",
                "sync: %d connections in their handshake: closing the one from %s at once",
                self._unauthenticated,
                ch.peer,
            )
            ch.close()
            return
        try:
            self._unauthenticated += 1
            try:
                async with asyncio.timeout(HANDSHAKE_TIMEOUT):
                    await self._accept(ch)
            except TimeoutError:
                self.counters["handshake_timeout"] += 1
                raise
            finally:
                self._unauthenticated -= 1
            while True:
                msg = await ch.recv(timeout=3600)
                if msg.get("type") == "relay" and self.relay is not None:
                    self.relay.subscribe(ch, msg)  # no answer: adverts follow when wanted
                    continue
                if msg.get("type") == "doctor" and self.relay is not None:
                    self.relay.doctor(ch, msg)
                    continue
                await ch.send(await self._answer(msg))
        except sp.FrameError as e:
            self.counters[f"bad_frame_{e.reason}"] += 1
            self._log.warning(
                ("bad_frame", e.reason),
                "sync: closing connection from %s: bad frame (%s)",
                ch.peer,
                e,
            )
        except SyncRefused as e:
            self.counters["refused"] += 1
            self._log.warning("refused", "sync: %s", e)
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception as e:  # never let one connection take the daemon down
            self.counters["errors"] += 1
            self._log.exception(
                ("serve", type(e).__name__), "sync: connection from %s failed", ch.peer
            )
        finally:
            if self.relay is not None:
                self.relay.forget(ch)
            ch.close()

    async def _accept(self, ch: Channel) -> None:
        hello = await ch.recv(HANDSHAKE_TIMEOUT)
        if (
            hello.get("type") != "hello"
            or not isinstance(hello.get("nonce"), str)
            or len(hello["nonce"]) != 32
        ):
            raise sp.FrameError("garbage", "expected hello")
        if hello.get("proto") != sp.PROTO:
            await self._refuse(
                ch,
                "old_protocol",
                f"sync protocol {str(hello.get('proto'))[:10]} from {ch.peer}, this unit "
                f"speaks {sp.PROTO} (carpool {__version__}): config sync is down until both "
                "units run the same release",
            )
        if hello.get("role") != sp.partner_role(self.role):
            await self._refuse(
                ch,
                "wrong_role",
                f"{ch.peer} says it is the {str(hello.get('role'))[:10]} unit, not our "
                "partner: a reflected handshake, or both units configured with one role",
            )
        hs = sp.Handshake(hello["role"], self.role, hello["nonce"], secrets.token_hex(16))
        await ch.send(
            {
                "type": "challenge",
                "role": self.role,
                "nonce": hs.server_nonce,
                "proof": hs.proof(self.key, "server"),
            }
        )
        answer = await ch.recv(HANDSHAKE_TIMEOUT)
        if (
            answer.get("type") != "proof"
            or not isinstance(answer.get("proof"), str)
            or not secrets.compare_digest(answer["proof"], hs.proof(self.key, "client"))
        ):
            await self._refuse(
                ch,
                "unauthorized",
                f"unauthorized connection from {ch.peer} (wrong partner secret)",
                "unauthorized",
            )
        ch.start_session(sp.Session(hs.session_key(self.key), False))
        await ch.send({"type": "welcome", "role": self.role, "features": sorted(FEATURES)})
        self.on_partner()

    async def _refuse(self, ch: Channel, counter: str, why: str, answer: str = "") -> None:
        """Count and log (rate-limited) why a handshake is refused, tell the peer, close."""
        self.counters[counter] += 1
        self._log.warning(counter, "sync: %s", why)
        await ch.send({"type": "error", "error": answer or why})
        raise ConnectionError(counter)

    async def _answer(self, msg: dict) -> dict:
        kind = msg["type"]
        if kind == "state":
            return {
                "type": "state",
                "history": _keys(self.store),
                "current": _current(self.store),
                "ha": self.ha_state(),
                "time": time.time(),
                "carpool": __version__,
            }
        if kind == "fetch":
            try:
                keys = _key_list(msg.get("keys"), "fetch")
                return {"type": "versions", "versions": _versions(self.store, keys)}
            except (KeyError, TypeError, StoreError) as e:
                return {"type": "error", "error": f"fetch: {e}"}
        if kind == "push":
            try:
                await self._receive(msg)
            except (SyncRefused, StoreError, OSError) as e:
                log.error("sync: refused push: %s", e)
                stale = {"code": StalePush.CODE} if isinstance(e, StalePush) else {}
                return {"type": "error", "error": str(e), **stale}
            return {"type": "ack", "history": _keys(self.store), "current": _current(self.store)}
        raise sp.FrameError("garbage", f"unknown message {kind!r}")

    async def _receive(self, msg: dict) -> None:
        # validation is linear but not free (10,000 services: 0.15 s): off the advert loop
        versions = await asyncio.to_thread(_parse_versions, msg.get("versions"))
        lost = _key_list(msg.get("lost") or [], "lost")
        why = str(msg.get("why", "lost a split-brain resolution"))[:200]
        expect = _key_or_none(msg.get("expect"), "expect")

        def job() -> None:
            # The pusher planned against what it last saw of us: if we changed since (e.g.
            # while partitioned), its plan is stale and applying it could silently drop our
            # versions. Checked under the write lock, with the writes.
            current = self.store.current.record.key if self.store.current else None
            if expect is not None and (current is None or list(current) != list(expect)):
                raise StalePush(
                    f"stale push: expected version {expect[0]}, "
                    f"here {current[0] if current else 'none'}"
                )
            for version, hash_ in lost:
                self.store.keep_as_conflict(self.store.get(version, hash_).record, why)
                log.warning("sync: version %d kept as conflict: %s", version, why)
            if versions:
                self.store.adopt_many(versions)

        await self.writer.run(job)
        self._adopted(versions)

    def _adopted(self, versions: list[Version]) -> None:
        now = time.time()
        self.applied.extend((v.record.version, v.record.when, now) for v in versions)
        if versions:
            current = current_version(self.store)
            log.info(
                "sync: now at version %d (%s)", current.record.version, current.record.hash[:12]
            )
            self.on_apply(current)

    # -- client side (the active unit) -----------------------------------------------------
    def changed(self) -> None:
        """A new local version: push it now."""
        self._sent.clear()
        self._wake.set()

    async def sent(self, timeout: float) -> None:
        """Until the push of the last change is written to the partner (bounded; at once when
        the partner is not in sync): the committer's data plane work (a big document's is
        hundreds of ms of the loop) must not hold up the push's few loop turns."""
        if self.state is not SyncState.IN_SYNC:
            return
        try:
            await asyncio.wait_for(self._sent.wait(), timeout)
        except TimeoutError:
            pass

    async def force(self) -> dict:
        """Force Partner Update: the partner takes our current version, its own newer ones
        kept as conflicts."""
        ch = await self._connect()
        try:
            state = await self._call(ch, {"type": "state"})
            theirs = _key_list(state.get("history"), "history")
            _key_or_none(state.get("current"), "current")
            ours = [tuple(k) for k in _keys(self.store)]
            lost = [k for k in theirs if k not in ours and k[0] > 0]
            push = [k for k in ours if k not in theirs]
            if not push and ours and theirs and theirs[-1] != ours[-1]:
                push = [ours[-1]]
            reply = await self._push(
                ch, push, lost, "overwritten by Force Partner Update", expect=state.get("current")
            )
            return {
                "pushed": [k[0] for k in push],
                "kept_as_conflict": [k[0] for k in lost],
                "partner": reply,
            }
        finally:
            ch.close()

    async def _connect(self) -> Channel:
        address = self.partner()
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(address, self.port), HANDSHAKE_TIMEOUT
        )
        ch = Channel(reader, writer)
        try:
            async with asyncio.timeout(HANDSHAKE_TIMEOUT):
                await self._handshake(ch, address)
            return ch
        except BaseException:
            ch.close()
            raise

    async def _handshake(self, ch: Channel, address: str) -> None:
        nonce = secrets.token_hex(16)
        await ch.send({"type": "hello", "proto": sp.PROTO, "role": self.role, "nonce": nonce})
        try:
            challenge = await ch.recv(HANDSHAKE_TIMEOUT)
        except (ConnectionError, asyncio.IncompleteReadError):
            raise SyncRefused(
                f"partner {address} closed the connection after our hello: it may run an "
                f"older carpool (sync protocol {sp.PROTO - 1}); config sync is down until both "
                "units run the same release"
            ) from None
        if challenge.get("type") == "error":
            self.counters["refused_by_partner"] += 1
            raise SyncRefused(f"partner {address} refused: {str(challenge.get('error'))[:300]}")
        if challenge.get("type") != "challenge" or not isinstance(challenge.get("nonce"), str):
            raise sp.FrameError("garbage", "expected challenge")
        if challenge.get("role") != sp.partner_role(self.role):
            self.counters["wrong_role"] += 1
            raise SyncRefused(
                f"{address} answers as the {str(challenge.get('role'))[:10]} unit, not our "
                "partner: a reflected handshake, or both units configured with one role"
            )
        hs = sp.Handshake(self.role, challenge["role"], nonce, challenge["nonce"])
        # Our proof goes first, whatever theirs is: it is bound to fresh nonces and both roles
        # (useless to anyone else), and it lets the partner log a wrong secret on its side too.
        await ch.send({"type": "proof", "proof": hs.proof(self.key, "client")})
        if not secrets.compare_digest(
            str(challenge.get("proof", "")), hs.proof(self.key, "server")
        ):
            self.counters["partner_unauthorized"] += 1
            raise SyncRefused(f"partner {address} failed authentication (wrong secret?)")
        session = sp.Session(hs.session_key(self.key), True)
        body = await ch.body(HANDSHAKE_TIMEOUT)
        welcome, refusal = sp.open_welcome(session, body)
        if refusal is not None:
            self.counters["refused_by_partner"] += 1
            raise SyncRefused(f"partner {address} refused our secret: {refusal}")
        if welcome.get("type") != "welcome":
            raise sp.FrameError("garbage", "expected welcome")
        features = welcome.get("features")
        if isinstance(features, list):
            ch.features = frozenset(f for f in features[:32] if isinstance(f, str))
        ch.start_session(session)
        self.on_partner()

    async def _call(self, ch: Channel, msg: dict) -> dict:
        await ch.send(msg)
        reply = await ch.recv()
        if reply.get("type") == "error":
            refused = StalePush if reply.get("code") == StalePush.CODE else SyncRefused
            raise refused(f"partner: {reply.get('error')}")
        return reply

    async def _push(self, ch: Channel, keys, lost=(), why: str = "", expect=...) -> dict:
        if expect is ...:
            expect = list(self._their_current) if self._their_current else None
        msg = {
            "type": "push",
            "versions": _versions(self.store, keys),
            "lost": [list(k) for k in lost],
            "why": why,
            "expect": expect,
        }
        await ch.send(msg)
        self._sent.set()
        reply = await ch.recv()
        if reply.get("type") == "error":
            refused = StalePush if reply.get("code") == StalePush.CODE else SyncRefused
            raise refused(f"partner: {reply.get('error')}")
        self._partner_at(reply.get("history"), reply.get("current"))
        return {"version": self.partner_version[0] if self.partner_version else None}

    def _partner_at(self, history: object, current: object) -> None:
        """The partner's history and current version from its answer (checked: a partner's
        bug is a FrameError here, not an exception somewhere in the plan)."""
        theirs = _key_list(history, "history")
        self._their_current = _key_or_none(current, "current")
        self._theirs = theirs
        self.partner_version = self._their_current

    async def reconcile(self, ch: Channel, fresh: bool = True) -> str:
        """Compare histories and act. fresh=False (a local change on a live connection):
        trust the partner's history from its last answer and save a round trip."""
        if fresh or self._theirs is None:
            state = await self._call(ch, {"type": "state"})
            self._partner_at(state.get("history"), state.get("current"))
            if isinstance(state.get("ha"), str):
                self.partner_ha = {"state": state["ha"], "at": time.time()}
        assert self._theirs is not None  # just set, or kept from the last answer
        theirs = list(self._theirs)
        ours = [tuple(k) for k in _keys(self.store)]
        p = sp.plan(ours, theirs, self.role, self.preferred())
        if p.action == "in_sync":
            return p.action
        log.info(
            "sync: %s (push %s, pull %s, lost here %s, lost there %s)",
            p.action,
            [k[0] for k in p.push],
            [k[0] for k in p.pull],
            [k[0] for k in p.ours_lost],
            [k[0] for k in p.theirs_lost],
        )
        if p.pull:
            got = await self._call(ch, {"type": "fetch", "keys": [list(k) for k in p.pull]})
            versions = _parse_versions(got.get("versions"))
            why = f"lost to {p.winner}'s version {p.pull[-1][0]} after a split"

            def job() -> None:
                # A local change committed since the plan would be overwritten unseen: plan
                # again (the client loop retries) rather than adopt over it.
                if [tuple(k) for k in _keys(self.store)] != ours:
                    raise SyncRefused("our history changed during the pull: planning again")
                for key in p.ours_lost:
                    self.store.keep_as_conflict(self.store.get(*key).record, why)
                    log.warning("sync: our version %d kept as conflict: %s", key[0], why)
                if versions:
                    self.store.adopt_many(versions)

            await self.writer.run(job)
            self._adopted(versions)
        if p.push:
            why = f"lost to {p.winner}'s version {p.push[-1][0]} after a split" if p.winner else ""
            await self._push(ch, p.push, p.theirs_lost, why)
        return p.action

    async def _client_loop(self) -> None:
        ch: Channel | None = None
        while True:
            try:
                if cancel_requested():
                    raise asyncio.CancelledError
                if not self.is_active():
                    if ch:
                        ch.close()
                        ch = None
                    self.state = SyncState.IDLE
                    await self._sleep(1.0)
                    continue
                fresh = True
                if ch is None:
                    self.state = SyncState.CONNECTING
                    ch = await self._connect()
                while self.is_active():
                    try:
                        await self.reconcile(ch, fresh)
                    except StalePush:
                        if fresh:
                            raise
                        await self.reconcile(ch, True)  # the partner moved: look again
                    self.state, self.last_ok = SyncState.IN_SYNC, time.time()
                    self.last_error = ""
                    self._sent.set()  # (nothing to push, or pushed)
                    fresh = not await self._sleep(self._interval())
            except asyncio.CancelledError:
                if ch:
                    ch.close()
                raise
            except Exception as e:  # nothing a partner sends ends the loop
                if not isinstance(
                    e,
                    (
                        TimeoutError,
                        OSError,
                        ConnectionError,
                        sp.FrameError,
                        SyncRefused,
                        StoreError,
                        KeyError,
                        TypeError,
                    ),
                ):
                    self.counters["internal_error"] += 1
                    self._log.exception(("client", type(e).__name__), "sync: client loop failed")
                why = str(e)[:200] or type(e).__name__
                if self.last_error != why:
                    log.warning("sync down: %s", why)
                self.state, self.last_error = SyncState.DOWN, why
                self._sent.set()
                self.counters["failures"] += 1
                if ch:
                    ch.close()
                    ch = None
                self._theirs = None
                await self._sleep(RETRY)

    async def probe_partner(self) -> dict:
        """One connection for the doctor: reachable? authenticated? the partner's state, clock
        and versions. Never raises; touches neither store nor sync state."""
        started = time.monotonic()
        result: dict[str, object] = {
            "reachable": False,
            "authenticated": None,
            "error": "",
            "connect_ms": None,
        }
        try:  # the partner is one hop away: 2 s without an answer is a dropped port
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.partner(), self.port), DOCTOR_CONNECT_TIMEOUT
            )
        except (TimeoutError, OSError) as e:
            result["error"] = (
                f"connect to {self.partner()}:{self.port}: {type(e).__name__} {e}".strip()
            )
            return result
        result["reachable"] = True
        result["connect_ms"] = round((time.monotonic() - started) * 1000, 3)
        writer.close()
        try:
            ch = await self._connect()
        except SyncRefused as e:
            result.update(authenticated=False, error=str(e))
            return result
        except Exception as e:  # never raises: whatever the partner said is the finding
            result["error"] = f"handshake: {type(e).__name__} {e}".strip()[:300]
            return result
        try:
            sent = time.time()
            state = await self._call(ch, {"type": "state"})
            received = time.time()
            result.update(
                authenticated=True,
                ha=state.get("ha"),
                carpool=state.get("carpool"),
                current=state.get("current"),
                rtt_ms=round((received - sent) * 1000, 3),
            )
            if isinstance(state.get("time"), (int, float)):
                result["clock_offset"] = round(state["time"] - (sent + received) / 2, 3)
        except Exception as e:
            result.update(authenticated=True, error=f"state: {type(e).__name__} {e}".strip()[:300])
        finally:
            ch.close()
        return result

    def _interval(self) -> float:
        current = self.store.current
        return current.document.sync.interval if current else 5.0

    async def _sleep(self, seconds: float) -> bool:
        """Wait for a local change (True) or the timeout (False)."""
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
            woken = True
        except TimeoutError:
            woken = False
        self._wake.clear()
        return woken

    def status(self) -> dict:
        ours = self.store.current.record.key if self.store.current else None
        lag = None
        if ours and self.partner_version:
            lag = ours[0] - self.partner_version[0]
        state = (
            f"{SyncState.DOWN}: {self.last_error}"
            if self.state is SyncState.DOWN
            else self.state.value
        )
        return {
            "state": state,
            "port": self.port,
            "version": ours[0] if ours else None,
            "hash": ours[1] if ours else None,
            "partner_version": self.partner_version[0] if self.partner_version else None,
            "partner_hash": self.partner_version[1] if self.partner_version else None,
            "lag": lag,
            "last_ok": self.last_ok,
            "last_error": self.last_error,
            "counters": dict(self.counters),
        }
