"""The L7 data plane: a managed HAProxy (master-worker) for the http virtual services.

carpool writes the configuration from the document, runs `haproxy -W -db` as its child, reloads
it hitlessly (SIGUSR2 to the master: new workers take the listeners, old ones finish their
connections) when the configuration changes, sets real-server state through the runtime API
(`set server BACKEND/SERVER state ready|maint`) when a health check flips, and restarts HAProxy
when it dies. Both units run it: the listeners bind the shared address with
`ip_nonlocal_bind` (IPv4 and IPv6), so a takeover only moves the address.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import time
from pathlib import Path

from .. import events, files
from ..config.document import Document, Pool, Rule, VirtualService
from ..family import hostport
from . import sticky as sticky_tables
from .process import dies_with_us, stop_process

log = events.logger("carpool.haproxy", events.Kind.DATAPLANE)
HAPROXY = "/usr/sbin/haproxy"
# fixed: every server after the first is a backup, and HAProxy uses only the first backup
# that is up (no allbackups): ordered fail-over
BALANCE = {
    "rr": "roundrobin",
    "wrr": "roundrobin",
    "lc": "leastconn",
    "sh": "source",
    "fixed": "roundrobin",
}
NONLOCAL = ("/proc/sys/net/ipv4/ip_nonlocal_bind", "/proc/sys/net/ipv6/ip_nonlocal_bind")
PEERS_PORT = 6974  # HAProxy's peers protocol: persistence tables to the partner's HAProxy
STICK_SIZE = "256k"
# Mozilla's server-side TLS profiles (v5.7): "modern" TLS 1.3 only; "intermediate" TLS 1.2 too,
# with forward-secret AEAD ciphers only (the DHE ones left out: they need a dhparam file).
_TLS13 = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
PROFILES = {
    "modern": f"ssl-min-ver TLSv1.3 ciphersuites {_TLS13}",
    "intermediate": "ssl-min-ver TLSv1.2 ciphers ECDHE-ECDSA-AES128-GCM-SHA256:"
    "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    f"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305 ciphersuites {_TLS13}",
}


LOCAL_ONLY = (("first", "127.0.0.1"), None)


def peers(cfg) -> tuple[tuple[str, str], tuple[str, str] | None]:
    """((our name, our address), (partner's name, address) or None) for HAProxy's peers
    section: over the heartbeat link when there is one and ha.state_sync is on (the partner's
    HAProxy then knows every persistent client before it takes over), else local only (the
    tables still survive a reload)."""
    if not cfg.heartbeats or not cfg.document.ha.state_sync:
        return (cfg.role, "127.0.0.1"), None
    link = cfg.heartbeats[0]
    return ((cfg.role, str(link.own(cfg.role))), (cfg.partner_role, str(link.partner(cfg.role))))


def _peer(address: str) -> str:
    return hostport(address, PEERS_PORT)


def sticky(vs: VirtualService, group: VirtualService | Pool | None = None) -> bool:
    """Source-address persistence with a timeout (cookie persistence needs no table), of the
    service or of one of its pools."""
    g = vs if group is None else group
    return vs.proxied and bool(g.persistence) and not g.cookie


def server_name(n: int) -> str:
    return f"rs{n + 1}"


def _backend(
    vs: VirtualService,
    healthy,
    tls_dir: Path,
    key: str = "",
    group: VirtualService | Pool | None = None,
) -> list[str]:
    """The backend of the service's own servers, or (key, group) of one of its pools."""
    g = vs if group is None else group
    key = key or vs.name
    lines = [f"backend be_{key}", f"    balance {BALANCE[g.scheduler]}"]
    if sticky(vs, g):  # a client seen within `persistence` s goes back to its server
        lines += [
            # type ipv6 holds IPv6 clients (and IPv4 ones, mapped); an IPv4 service keeps
            # type ip, which its partner on an older release has too
            f"    stick-table type {'ipv6' if ':' in vs.address else 'ip'} size {STICK_SIZE} "
            f"expire {g.persistence}s peers carpool",
            "    stick on src",
        ]
    if vs.x_forwarded_for:
        lines.append("    option forwardfor")
    if g.cookie:
        lines.append("    cookie CARPOOL insert indirect nocache")
    for n, rs in enumerate(g.real_server):
        line = f"    server {server_name(n)} {hostport(rs.address, rs.port)} weight {rs.weight}"
        line += _server_tls(vs, tls_dir)
        if g.scheduler == "fixed" and n:
            line += " backup"
        if rs.max_connections:
            line += f" maxconn {rs.max_connections}"
        if rs.slow_start:
            line += f" slowstart {rs.slow_start}s"
        if g.cookie:
            line += f" cookie {server_name(n)}"
        if not rs.enabled or not healthy(key, rs.address, rs.port):
            line += " disabled"
        lines.append(line)
    if vs.when_down == "sorry" and vs.sorry_server:
        lines.append(f"    server sorry {hostport(vs.sorry_server, vs.port)} backup")
    return lines


RULE_VAR = "txn.carpool_rule"


def _q(text: str) -> str:
    """Single-quoted for HAProxy (the document refuses a quote inside)."""
    return f"'{text}'"


def _conditions(rule: Rule) -> list[str]:
    conds = []
    if rule.host:
        hosts = " ".join(_q(h.lower()) for h in rule.host)
        conds.append(f"{{ req.hdr(host),field(1,:),lower -m str {hosts} }}")
    if rule.path_prefix:
        conds.append(f"{{ path_beg {' '.join(_q(p) for p in rule.path_prefix)} }}")
    if rule.path_regex:
        conds.append(f"{{ path_reg {_q(rule.path_regex)} }}")
    if rule.method:
        conds.append(f"{{ method {' '.join(rule.method)} }}")
    if rule.header and rule.header_value:
        conds.append(f"{{ req.hdr({rule.header}) -m sub {_q(rule.header_value)} }}")
    elif rule.header:
        conds.append(f"{{ req.hdr({rule.header}) -m found }}")
    return conds


def _rules(vs: VirtualService) -> tuple[list[str], list[str]]:
    """Content rules: the first rule that matches is remembered in a variable (the response
    rules need it when the request is gone), then each acts where it is the one."""
    if not vs.rule:
        return [], []
    lines = []
    for n, rule in enumerate(vs.rule, 1):
        first = f"!{{ var({RULE_VAR}) -m found }}"
        lines.append(
            f"    http-request set-var({RULE_VAR}) int({n}) if {' '.join([first, *_conditions(rule)])}"
        )
    for n, rule in enumerate(vs.rule, 1):
        this = f"{{ var({RULE_VAR}) -m int {n} }}"
        if rule.redirect:
            lines.append(
                f"    http-request redirect location {_q(rule.redirect.replace('%', '%%'))} "
                f"code {rule.redirect_code} if {this}"
            )
        for side, deleted, set_ in (
            ("request", rule.delete_request_header, rule.set_request_header),
            ("response", rule.delete_response_header, rule.set_response_header),
        ):
            lines += [f"    http-{side} del-header {name} if {this}" for name in deleted]
            for line in set_:
                name, _, value = line.partition(":")
                lines.append(
                    f"    http-{side} set-header {name.strip()} {_log_text(value.strip())} if {this}"
                )
    # the choices of a backend go after every http-request rule (HAProxy runs those first)
    backends = [
        f"    use_backend be_{vs.name}:{rule.pool} if {{ var({RULE_VAR}) -m int {n} }}"
        for n, rule in enumerate(vs.rule, 1)
        if rule.pool
    ]
    return lines, backends


def _log_text(value: str) -> str:
    """A header value as set-header takes it: a log-format string, so a literal % doubles."""
    return _q(value.replace("%", "%%")) if value else "''"


def _server_tls(vs: VirtualService, tls_dir: Path) -> str:
    """TLS to a real server: verified against backend_ca (the chain, not the name: real
    servers are addressed by IP), or encrypted only."""
    if not vs.backend_tls:
        return ""
    if vs.backend_ca:
        return f" ssl verify required ca-file {tls_dir / ca_file(vs.backend_ca)} alpn http/1.1"
    return " ssl verify none alpn http/1.1"


def cert_file(name: str) -> str:
    return f"{name}.pem"  # the chain, then the key: what HAProxy's `crt` reads


def ca_file(name: str) -> str:
    return f"ca/{name}.pem"  # its own directory: no certificate's name can meet it


def tls_files(doc: Document) -> dict[str, str]:
    """file name -> content of every certificate the services use (keys only where served)."""
    out = {}
    for vs in doc.virtual_service:
        for name in vs.certificate:
            cert = next(c for c in doc.certificate if c.name == name)
            out[cert_file(name)] = cert.chain.rstrip("\n") + "\n" + cert.key.rstrip("\n") + "\n"
        if vs.backend_ca:
            cert = next(c for c in doc.certificate if c.name == vs.backend_ca)
            out[ca_file(vs.backend_ca)] = cert.chain.rstrip("\n") + "\n"
    return out


def config_text(
    doc: Document,
    run_dir: Path,
    healthy=lambda *k: True,
    peer_list=LOCAL_ONLY,
    tls_dir: Path | None = None,
) -> str:
    """HAProxy's configuration for the document; certificates read from tls_dir (default
    run_dir/tls)."""
    tls_dir = tls_dir or run_dir / "tls"
    (own, own_address), partner = peer_list
    tables = any(sticky(vs, g) for vs in doc.virtual_service for _, g in vs.groups())
    lines = [
        "# written by carpool from the configuration document; do not edit",
        "global",
        "    maxconn 4000",
        f"    stats socket {run_dir / 'haproxy.sock'} mode 600 level admin",
        # a reload lets idle keep-alive clients send their next request to the old worker,
        # which answers it with Connection: close, instead of closing under them (a race
        # the client sees as a failed request); old workers are gone after a minute.
        "    hard-stop-after 60s",
        "    tune.bufsize 65536",
        *([f"    localpeer {own}"] if tables else []),
        "",
        "defaults",
        "    mode http",
        "    option idle-close-on-response",
        "    timeout connect 2s",
        "    timeout client 30s",
        "    timeout server 30s",
        "    option dontlognull",
        "",
    ]
    if tables:  # the old worker hands its tables to the new one at a reload, and the partner
        lines += [
            "peers carpool",
            f"    peer {own} {_peer(own_address)}",
            *([f"    peer {partner[0]} {_peer(partner[1])}"] if partner else []),
            "",
        ]
    for vs in doc.virtual_service:
        if vs.proxied:
            lines += _frontend(vs, tls_dir)
            for key, group in vs.groups():
                lines += _backend(vs, healthy, tls_dir, key, group) + [""]
            if vs.min_up and vs.when_down == "sorry" and vs.sorry_server:
                lines += [
                    f"backend sorry_{vs.name}",  # not be_*: a pool may be called sorry
                    f"    server sorry {hostport(vs.sorry_server, vs.port)}",
                    "",
                ]
    return "\n".join(lines)


def _frontend(vs: VirtualService, tls_dir: Path) -> list[str]:
    bind = f"    bind {hostport(vs.address, vs.port)}"
    lines = [f"frontend fe_{vs.name}"]
    if vs.type == "https":
        # the first certificate answers clients without SNI (or naming none of them)
        crts = " ".join(f"crt {tls_dir / cert_file(name)}" for name in vs.certificate)
        lines.append(f"{bind} ssl {crts} alpn h2,http/1.1 {PROFILES[vs.tls_profile]}")
        lines.append("    http-request set-header X-Forwarded-Proto https")
        if vs.hsts:
            lines.append(
                f'    http-response set-header Strict-Transport-Security "max-age={vs.hsts}"'
            )
    else:
        lines.append(bind)
        lines.append("    http-request set-header X-Forwarded-Proto http")
    requests, backends = _rules(vs)
    lines += requests
    if vs.min_up:  # fewer usable servers than the quorum: the service counts as down
        # (for the requests that go to its own servers: a rule's pool or redirect is not)
        ruled = f"!{{ var({RULE_VAR}) -m found }} " if vs.rule else ""
        quorum = f"{ruled}{{ nbsrv(be_{vs.name}) lt {vs.min_up} }}"
        if vs.when_down == "sorry" and vs.sorry_server:
            backends.append(f"    use_backend sorry_{vs.name} if {quorum}")
        else:
            lines.append(f"    http-request deny deny_status 503 if {quorum}")
    lines += [*backends, f"    default_backend be_{vs.name}", ""]
    if vs.redirect_http:  # plain http on port 80 of the same address: to https, permanently
        lines += [
            f"frontend fe_{vs.name}_redirect",
            f"    bind {hostport(vs.address, 80)}",
            "    http-request redirect scheme https code 301",
            "",
        ]
    return lines


class HaproxyDataplane:
    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)
        self.cfg_path = self.dir / "haproxy.cfg"
        self.proc: asyncio.subprocess.Process | None = None
        self.text: str | None = None
        self.tls: dict[str, str] | None = None  # the certificate files the running config reads
        self.restarts = 0
        self.reloads = 0
        self.last_error = ""
        self._watch: asyncio.Task | None = None
        self._stopping = False
        self._lock = asyncio.Lock()

    def wanted(self, doc: Document) -> bool:
        return any(vs.proxied for vs in doc.virtual_service)

    async def apply(self, cfg, healthy) -> bool:
        """Write the configuration for the unit's document; start HAProxy or reload it. A
        configuration HAProxy refuses (`haproxy -c`) is not applied: the running one stays."""
        async with self._lock:  # one reload at a time (each awaits haproxy -c, the tables)
            return await self._apply(cfg.document, healthy, peers(cfg))

    async def _apply(self, doc: Document, healthy, peer_list) -> bool:
        if not self.wanted(doc):
            await self.stop()
            _remove_tls(self.dir)  # no key stays on disk that nothing serves
            return True
        text = config_text(doc, self.dir, healthy, peer_list)
        wanted = tls_files(doc)
        # a renewed certificate changes the files only, not the text: reloaded all the same
        if text == self.text and wanted == self.tls and self.running:
            return True
        files.private_dir(self.dir)
        # checked against new files in their own directory: a refused one leaves the running
        # configuration's files as they were
        staged = self.dir / "tls.new"
        _remove_tls(self.dir, staged.name)
        _write_tls(staged, wanted)
        candidate = self.dir / "haproxy.cfg.new"
        files.write_new(candidate, config_text(doc, self.dir, healthy, peer_list, staged))
        check = await asyncio.create_subprocess_exec(
            HAPROXY,
            "-c",
            "-q",
            "-f",
            str(candidate),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await check.communicate()
        if check.returncode != 0:
            self.last_error = out.decode(errors="replace").strip()[-500:]
            log.error(
                "HAProxy refused the new configuration, the running one stays: %s", self.last_error
            )
            _remove_tls(self.dir, staged.name)
            return False
        _swap_tls(self.dir, staged)
        candidate.unlink(missing_ok=True)
        files.write_private(self.cfg_path, text)  # as checked, reading tls/ instead of tls.new/
        live, self.text, self.last_error = self.text, text, ""
        self.tls = wanted
        _nonlocal_bind()
        if self.running:
            saved = await self._read_tables(live)
            old_pid = await self._worker_pid()
            proc = self.proc  # read after the awaits: _supervise may have restarted it
            if proc is not None:  # (always, once HAProxy has run)
                proc.send_signal(signal.SIGUSR2)  # master-worker: hitless reload
            # over once the new worker serves: a request sent after `apply` meets the new
            # configuration (and the clients the old worker knew), not the old worker
            if await self._new_worker(old_pid):
                await self._write_tables(saved, live or "", text)
            self.reloads += 1
            log.info("HAProxy reloaded")
        else:
            await self._start()
        return True

    @property
    def _live(self) -> asyncio.subprocess.Process | None:
        """The process while it runs."""
        proc = self.proc
        return proc if proc is not None and proc.returncode is None else None

    @property
    def running(self) -> bool:
        return self._live is not None

    async def _read_tables(self, live_text: str | None) -> dict[str, list[tuple[str, int]]]:
        saved = {}
        for backend in sticky_tables.servers_by_id(live_text or ""):
            saved[backend] = sticky_tables.entries(await self.runtime(f"show table {backend}"))
        return saved

    async def _new_worker(self, old_pid: str) -> bool:
        """Until the runtime socket answers from a worker other than `old_pid` (5 s)."""
        deadline = time.monotonic() + 5
        while await self._worker_pid(quiet=True) in ("", old_pid):
            if time.monotonic() > deadline:
                log.warning(
                    "HAProxy's new worker did not answer within 5 s: persistent clients "
                    "will be scheduled anew"
                )
                return False
            await asyncio.sleep(0.02)
        return True

    async def _write_tables(self, saved: dict, live_text: str, text: str) -> None:
        """Give the new worker the old one's clients."""
        commands = sticky_tables.restore_commands(saved, live_text, text)
        if not commands:
            return
        for at in range(0, len(commands), 200):  # `;` joins commands: one connection each 200
            await self.runtime("; ".join(commands[at : at + 200]))
        log.info("HAProxy: %d persistent clients kept over the reload", len(commands))

    async def _worker_pid(self, quiet: bool = False) -> str:
        # quiet while polling a reload: the socket is rebound by the new worker
        pid = re.search(r"^Pid: (\d+)", await self.runtime("show info", quiet), re.M)
        return pid[1] if pid else ""

    async def _start(self) -> None:
        self._stopping = False
        self.proc = await asyncio.create_subprocess_exec(
            *dies_with_us(
                [
                    HAPROXY,
                    "-W",
                    "-db",
                    # the master's CLI reaches every worker, also the old ones a reload left
                    "-S",
                    f"{self.dir / 'master.sock'},mode,600",
                    "-f",
                    str(self.cfg_path),
                ]
            ),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        log.info("HAProxy started (pid %d)", self.proc.pid)
        if self._watch is None or self._watch.done():
            self._watch = asyncio.get_running_loop().create_task(self._supervise())

    async def _supervise(self) -> None:
        """Restart HAProxy when it dies (a crash, a killed master), at most once a second."""
        while not self._stopping:
            proc = self.proc
            if proc is None or proc.stderr is None:  # (never: _start made it, stderr piped)
                return
            err = await proc.stderr.read()
            await proc.wait()
            if self._stopping or proc is not self.proc:
                return
            self.restarts += 1
            self.last_error = (
                f"exited with {proc.returncode}: " + err.decode(errors="replace").strip()[-300:]
            )
            log.error("HAProxy died (%s); restarting", self.last_error)
            await asyncio.sleep(1.0)
            if not self._stopping:
                await self._start()
                return

    async def set_server(
        self, key: str, group: VirtualService | Pool, address: str, port: int, up: bool
    ) -> None:
        """Health flip through the runtime API (no reload), in the backend of `key`."""
        for n, rs in enumerate(group.real_server):
            if (rs.address, rs.port) == (address, port):
                state = "ready" if up and rs.enabled else "maint"
                await self.runtime(f"set server be_{key}/{server_name(n)} state {state}")

    async def shutdown_sessions(
        self, key: str, group: VirtualService | Pool, address: str, port: int
    ) -> int:
        """Closes the sessions of a server of backend be_KEY in every worker (the current one
        and those a reload left finishing, whose proxies are stopped: `shutdown sessions server`
        refuses there, so each session is shut by its id); returns how many were closed."""
        names = {
            server_name(n)
            for n, rs in enumerate(group.real_server)
            if (rs.address, rs.port) == (address, port)
        }
        # the master's CLI answers and keeps the connection open: each command ends with quit
        master = "master.sock"
        closed = 0
        for pid in workers(await self.runtime("show proc; quit", socket=master)):
            listing = await self.runtime(f"@!{pid} show sess; quit", socket=master)
            ids = sessions_of(listing, f"be_{key}", names)
            for at in range(0, len(ids), 100):
                shut = "; ".join(f"@!{pid} shutdown session {i}" for i in ids[at : at + 100])
                await self.runtime(f"{shut}; quit", socket=master)
            closed += len(ids)
        if closed:
            log.info("HAProxy: %d sessions on %s of be_%s closed", closed, sorted(names), key)
        return closed

    async def finish_clients(self) -> bool:
        """A planned failover's old unit: a reload with the same configuration, so the worker
        holding the clients' connections answers each one's next request with `Connection:
        close` and ends once they are done (the new worker only listens: the addresses moved).
        True once the new worker answers."""
        proc = self._live
        if proc is None:
            return False
        old_pid = await self._worker_pid()
        proc.send_signal(signal.SIGUSR2)
        self.reloads += 1
        return await self._new_worker(old_pid)

    async def old_workers(self) -> int | None:
        """Workers a reload left finishing (None: the master CLI does not answer)."""
        if self._live is None:
            return 0
        answer = await self.runtime("show proc; quit", quiet=True, socket="master.sock")
        return old_workers(answer) if answer else None

    async def runtime(self, command: str, quiet: bool = False, socket: str = "haproxy.sock") -> str:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(str(self.dir / socket)), 2
            )
            writer.write(command.encode() + b"\n")
            await writer.drain()
            out = await asyncio.wait_for(reader.read(), 2)
            writer.close()
            return out.decode(errors="replace")
        except (TimeoutError, OSError) as e:
            if not quiet:
                log.warning("HAProxy runtime API: %s: %s", command, e)
            return ""

    async def stats(self) -> list[dict]:
        """`show stat` as rows (none while HAProxy is not running)."""
        return parse_show_stat(await self.runtime("show stat")) if self.running else []

    async def stop(self) -> None:
        self._stopping = True
        proc = self._live
        if proc is not None:
            await stop_process(proc, grace=5)
        self.text = None

    def status(self) -> dict:
        live = self._live
        return {
            "running": live is not None,
            "pid": live.pid if live is not None else None,
            "reloads": self.reloads,
            "restarts": self.restarts,
            "last_error": self.last_error,
        }


def workers(show_proc: str) -> list[str]:
    """The workers' PIDs in the master CLI's `show proc` answer (current and old ones)."""
    return re.findall(r"^(\d+)\s+worker\b", show_proc, re.M)


def old_workers(show_proc: str) -> int:
    """How many workers the `# old workers` part of a `show proc` answer lists."""
    part = show_proc.partition("# old workers")[2].split("\n#", 1)[0]
    return len(workers(part))


def sessions_of(show_sess: str, backend: str, servers: set[str]) -> list[str]:
    """The ids of the sessions on the named servers of a backend in a `show sess` answer."""
    return [
        m[1]
        for m in re.finditer(r"^(0x[0-9a-f]+): .*?\bbe=(\S+) srv=(\S+)", show_sess, re.M)
        if m[2] == backend and m[3] in servers
    ]


def _remove_tls(run_dir: Path, name: str = "tls") -> None:
    shutil.rmtree(run_dir / name, ignore_errors=True)


def _swap_tls(run_dir: Path, staged: Path) -> None:
    """The checked files become the ones HAProxy reads (the running worker has its own in
    memory: the swap is for the reload that follows)."""
    old = run_dir / "tls.old"
    shutil.rmtree(old, ignore_errors=True)
    if (run_dir / "tls").exists():
        os.replace(run_dir / "tls", old)
    os.replace(staged, run_dir / "tls")
    shutil.rmtree(old, ignore_errors=True)


def _write_tls(directory: Path, wanted: dict[str, str]) -> None:
    """The certificates and keys HAProxy reads (`NAME.pem`, CA certificates `ca/NAME.pem`),
    0600 in a fresh 0700 directory: only what the services use is there."""
    shutil.rmtree(directory, ignore_errors=True)
    files.private_dir(directory)
    for name, text in wanted.items():
        path = directory / name
        files.private_dir(path.parent)
        files.write_private(path, text)


def _nonlocal_bind() -> None:
    for path in NONLOCAL:
        try:
            with open(path, "w") as f:
                f.write("1")
        except OSError as e:
            log.error("cannot enable %s: %s", path.removeprefix("/proc/sys/"), e)


def parse_show_stat(csv_text: str) -> list[dict]:
    """HAProxy's `show stat` CSV (header line starts with '# ') as dicts."""
    lines = [line for line in csv_text.splitlines() if line.strip()]
    if not lines or not lines[0].startswith("# "):
        return []
    header = lines[0][2:].split(",")
    return [dict(zip(header, line.split(","), strict=False)) for line in lines[1:]]
