"""Both data planes with real daemons, real servers and health checks: the lab's default services
web-l4 (nftables DNAT) on 198.18.0.10:80 and web-http (managed HAProxy) on 198.18.0.10:8080, over
cp-r1..cp-r3."""

from __future__ import annotations

import collections
import json
import os
import signal
import socket
import time

import pytest

from carpool.dataplane import nft
from carpool.lab.topology import CLIENT, UNIT_ADDR, mac_for

URL = "http://198.18.0.10/"
URL_HTTP = "http://198.18.0.10:8080/"
SERVERS = {"cp-r1", "cp-r2", "cp-r3"}


def other(unit: str) -> str:
    return "b" if unit == "a" else "a"


def answers(lab, count: int, url: str = URL) -> collections.Counter:
    """Which server answered each of `count` requests from the client (None = failed)."""
    seen = collections.Counter()
    for _ in range(count):
        body = lab.http_get(CLIENT, url, timeout=2.0)
        seen[next((s for s in SERVERS if body and s in body), None)] += 1
    return seen


def serving(lab) -> str:
    """The active unit once it serves: one master, every real server up in its data plane and
    both services answering the client (after a heal or a failover the first request may race
    the GARP). From then on every request a test makes must succeed."""
    active = lab.wait_for_master()
    lab.wait_for(
        lambda: all(s["up"] for s in lab.unit_status(active)["dataplane"]["servers"]),
        10,
        what=f"every real server up on unit {active}",
    )
    for url in (URL, URL_HTTP):
        lab.wait_for(
            lambda url=url: answers(lab, 1, url)[None] == 0, 10, what=f"{url} answers the client"
        )
    return active


@pytest.mark.parametrize("url", [URL, URL_HTTP], ids=["l4", "http"])
def test_requests_spread_over_every_real_server(healed_lab, url):
    lab = healed_lab
    serving(lab)
    seen = answers(lab, 12, url)
    assert seen[None] == 0, seen
    assert set(seen) == SERVERS, seen  # round robin: each of the 3 answers


def test_stopped_server_leaves_the_pool_and_comes_back_after_heal(healed_lab):
    lab = healed_lab
    active = serving(lab)
    lab.stop_server("r2")

    def out_of_pool():  # in both services, and gone from the applied L4 ruleset
        servers = lab.unit_status(active)["dataplane"]["servers"]
        r2 = [s for s in servers if s["address"] == "198.18.2.102"]
        # the pick (chain count names every configured server, for its statistics)
        ruleset = lab.exec(active, ["nft", "list", "chain", "ip", "carpool", "prerouting"]).stdout
        return len(r2) == 2 and not any(s["up"] for s in r2) and "198.18.2.102" not in ruleset

    lab.wait_for(out_of_pool, 5, what="r2 marked down (interval 0.5 s x fall 2)")
    for url in (URL, URL_HTTP):
        seen = answers(lab, 9, url)
        assert seen[None] == 0 and "cp-r2" not in seen, (url, seen)
    assert any(
        "198.18.2.102" in line and "down" in line for line in lab.log_tail(active, 50).splitlines()
    )
    lab.heal()

    def back_in_pool():  # in both services, and in the applied L4 ruleset again
        servers = lab.unit_status(active)["dataplane"]["servers"]
        # the pick (chain count names every configured server, for its statistics)
        ruleset = lab.exec(active, ["nft", "list", "chain", "ip", "carpool", "prerouting"]).stdout
        return (
            all(s["up"] for s in servers if s["address"] == "198.18.2.102")
            and "198.18.2.102" in ruleset
        )

    lab.wait_for(back_in_pool, 5, what="r2 up again (rise 2)")
    assert "cp-r2" in answers(lab, 9)
    assert "cp-r2" in answers(lab, 9, URL_HTTP)


def test_both_units_keep_the_data_plane_so_a_failover_only_moves_addresses(healed_lab):
    lab = healed_lab
    active = lab.wait_for_master()
    for unit in ("a", "b"):
        ruleset = lab.exec(unit, ["nft", "list", "table", "ip", "carpool"], check=True).stdout
        assert "198.18.0.10" in ruleset and "dnat" in ruleset, unit
    lab.term(active)
    lab.wait_for(
        lambda: lab.unit_status(other(active))["state"] == "master",
        10,
        what="the partner takes over",
    )
    deadline = time.monotonic() + 5
    seen = answers(lab, 6)
    while seen[None] and time.monotonic() < deadline:  # the first may race the GARP
        seen = answers(lab, 6)
    assert seen[None] == 0 and len(seen) >= 2, seen
    lab.heal()


def persistent_clients(lab, unit: str, service: str) -> int:
    """Clients the unit's data plane remembers for a service (nft sets / HAProxy table)."""
    if service == "web-l4":
        listing = lab.exec(unit, ["nft", "-j", "list", "table", "ip", "carpool"]).stdout
        return sum(len(m) for m in nft.persisted(json.loads(listing)).values())
    sock = socket.socket(socket.AF_UNIX)  # the runtime API socket is a file: reachable here
    with sock:
        sock.settimeout(2)
        sock.connect(str(lab.dir / unit / "haproxy" / "haproxy.sock"))
        sock.sendall(f"show table be_{service}\n".encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return sum(1 for line in answer.decode().splitlines() if line.startswith("0x"))


def set_key(lab, unit: str, key: str, value: str) -> None:
    answer = lab.exec(unit, ["carpool", "config", "set", key, value])
    assert answer.returncode == 0, answer.stderr


@pytest.mark.parametrize(
    "service, url", [("web-l4", URL), ("web-http", URL_HTTP)], ids=["l4", "http"]
)
def test_persistence_keeps_a_client_on_its_server_until_the_timeout(healed_lab, service, url):
    lab = healed_lab
    active = serving(lab)
    reloads = lab.unit_status(active)["dataplane"]["l7"]["reloads"]
    set_key(lab, active, f"virtual_service[{service}].persistence", "300")
    try:
        # applied by a task after the answer (http: an HAProxy reload): wait before looking
        if service == "web-http":
            lab.wait_for(
                lambda: lab.unit_status(active)["dataplane"]["l7"]["reloads"] > reloads,
                5,
                what="HAProxy reloaded",
            )
        else:
            lab.wait_for(
                lambda: (
                    "persist_" in lab.exec(active, ["nft", "list", "table", "ip", "carpool"]).stdout
                ),
                5,
                what="the persistence sets in the ruleset",
            )
        first = answers(lab, 6, url)
        assert first[None] == 0 and len(first) == 1, first
        server = next(iter(first))
        assert persistent_clients(lab, active, service) == 1
        # a reload (L4: the ruleset is replaced; http: HAProxy reloads) keeps what it knew
        reloads = lab.unit_status(active)["dataplane"]["l7"]["reloads"]
        lab.exec(
            active,
            [
                "carpool",
                "vs",
                "add",
                "other",
                "198.18.0.10",
                "8082",
                "--type",
                "http" if service == "web-http" else "l4",
            ],
            check=True,
        )
        if service == "web-http":
            lab.wait_for(
                lambda: lab.unit_status(active)["dataplane"]["l7"]["reloads"] > reloads,
                5,
                what="HAProxy reloaded",
            )
        else:
            lab.wait_for(
                lambda: (
                    '"other"' in lab.exec(active, ["nft", "list", "table", "ip", "carpool"]).stdout
                ),
                5,
                what="the new ruleset",
            )
        # carried over the reload (HAProxy: the old worker pushes its table to the new one)
        lab.wait_for(
            lambda: persistent_clients(lab, active, service) == 1,
            5,
            what="the client still known after the reload",
        )
        assert answers(lab, 4, url) == collections.Counter({server: 4})
        # a short timeout: a forgotten client is scheduled anew (round robin moves on, while
        # the pool and the rules stay as they are: another server), then sticks to that one
        reloads = lab.unit_status(active)["dataplane"]["l7"]["reloads"]
        set_key(lab, active, f"virtual_service[{service}].persistence", "1")
        if service == "web-http":  # the reload is over (the table restored) before we look
            lab.wait_for(
                lambda: lab.unit_status(active)["dataplane"]["l7"]["reloads"] > reloads,
                5,
                what="HAProxy reloaded",
            )
        picks = []
        for _ in range(2):
            lab.wait_for(
                lambda: persistent_clients(lab, active, service) == 0,
                10,
                what="the client forgotten after 1 s",
            )
            seen = answers(lab, 3, url)
            assert seen[None] == 0 and len(seen) == 1, seen
            picks.append(next(iter(seen)))
        assert picks[0] != picks[1], picks
    finally:
        lab.exec(active, ["carpool", "vs", "rm", "other"])
        set_key(lab, active, f"virtual_service[{service}].persistence", "0")


def test_persistence_survives_a_failover(healed_lab):
    """L7: HAProxy's table goes to the partner's HAProxy (peers over the heartbeat link).
    L4 source hash: both units hash alike (a fixed seed), also after a ruleset reload."""
    lab = healed_lab
    active = serving(lab)
    reloads = lab.unit_status(active)["dataplane"]["l7"]["reloads"]
    set_key(lab, active, "virtual_service[web-http].persistence", "300")
    set_key(lab, active, "virtual_service[web-l4].scheduler", "sh")
    try:
        lab.wait_for(
            lambda: (
                lab.unit_status(active)["dataplane"]["l7"]["reloads"] > reloads
                and "jhash" in lab.exec(active, ["nft", "list", "table", "ip", "carpool"]).stdout
            ),
            5,
            what="persistence and source hash applied on the active unit",
        )
        lab.wait_for(
            lambda: (
                "jhash" in lab.exec(other(active), ["nft", "list", "table", "ip", "carpool"]).stdout
            ),
            5,
            what="source hash on the standby",
        )
        before = {url: answers(lab, 4, url) for url in (URL, URL_HTTP)}
        for url, seen in before.items():
            assert seen[None] == 0 and len(seen) == 1, (url, seen)
        lab.wait_for(
            lambda: persistent_clients(lab, other(active), "web-http") == 1,
            5,
            what="the client in the standby's HAProxy table",
        )
        lab.term(active)
        lab.wait_for(
            lambda: lab.unit_status(other(active))["state"] == "master",
            10,
            what="the partner takes over",
        )
        for url, seen in before.items():
            # the first request may race the GARP: wait until the new active unit answers
            lab.wait_for(
                lambda url=url: answers(lab, 1, url)[None] == 0,
                10,
                what=f"{url} answers through the new active unit",
            )
            after = answers(lab, 4, url)
            assert after == collections.Counter({next(iter(seen)): 4}), (url, seen, after)
    finally:
        active = lab.heal() or lab.wait_for_master()
        set_key(lab, active, "virtual_service[web-http].persistence", "0")
        set_key(lab, active, "virtual_service[web-l4].scheduler", "rr")


def test_haproxy_crash_is_detected_and_restarted(healed_lab):
    lab = healed_lab
    active = lab.wait_for_master()
    l7 = lab.unit_status(active)["dataplane"]["l7"]
    assert l7["running"] and l7["pid"], l7
    os.kill(l7["pid"], signal.SIGKILL)
    lab.wait_for(
        lambda: (
            lab.unit_status(active)["dataplane"]["l7"]["restarts"] == l7["restarts"] + 1
            and lab.unit_status(active)["dataplane"]["l7"]["running"]
        ),
        10,
        what="HAProxy restarted by the daemon",
    )
    lab.wait_for(lambda: answers(lab, 1, URL_HTTP)[None] == 0, 10, what="http serves again")


def test_vs_and_rs_cli_change_the_pool_through_the_synced_document(healed_lab):
    lab = healed_lab
    active = lab.wait_for_master()

    def carpool(*argv):
        return lab.exec(active, ["carpool", *argv])

    bad = carpool("vs", "add", "nope", "198.18.0.99", "81")
    assert bad.returncode != 0 and "is not a shared address" in bad.stderr, bad.stderr
    assert carpool("vs", "add", "extra", "198.18.0.10", "81").returncode == 0
    assert carpool("rs", "add", "extra", "198.18.2.101:80").returncode == 0
    assert carpool("rs", "add", "extra", "198.18.2.103:80").returncode == 0
    url = "http://198.18.0.10:81/"
    # each change is applied by a task the daemon starts: wait until both servers answer
    lab.wait_for(
        lambda: set(answers(lab, 2, url)) == {"cp-r1", "cp-r3"},
        5,
        what="the new service answers from r1 and r3",
    )
    assert set(answers(lab, 6, url)) == {"cp-r1", "cp-r3"}
    assert carpool("rs", "disable", "extra", "198.18.2.101:80").returncode == 0
    lab.wait_for(lambda: "cp-r1" not in answers(lab, 2, url), 5, what="r1 out of the service")
    assert set(answers(lab, 4, url)) == {"cp-r3"}

    def synced():  # the partner gets the new version over 6973, a moment later
        listing = lab.exec(other(active), ["carpool", "vs", "list"], check=True).stdout
        return "extra: 198.18.0.10:81/tcp" in listing and "disabled" in listing

    lab.wait_for(synced, 10, what="the service and the disabled server on the standby")
    assert carpool("vs", "rm", "extra").returncode == 0


def _keepalive_load(lab, url: str, stop_file: str, connections: int = 3):
    """Start the keep-alive probe (carpool.lab.keepalive) in the client; returns the process."""
    import subprocess

    return lab.spawn(
        CLIENT,
        [
            lab.python(),
            "-m",
            "carpool.lab.keepalive",
            url,
            "--connections",
            str(connections),
            "--duration",
            "30",
            "--stop-file",
            stop_file,
            "--pause",
            "0.005",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_config_changes_under_load_drop_no_established_connection(healed_lab, tmp_path):
    """Weights, scheduler, a new service (an HAProxy reload) and a disabled server elsewhere:
    the keep-alive connections to healthy servers carry on without one failed request."""
    import json

    lab = healed_lab
    active = serving(lab)
    reloads = lab.unit_status(active)["dataplane"]["l7"]["reloads"]
    stop = tmp_path / "stop"
    l4 = _keepalive_load(lab, URL, str(stop))
    l7 = _keepalive_load(lab, URL_HTTP, str(stop))
    try:

        def carpool(*argv):
            answer = lab.exec(active, ["carpool", *argv])
            assert answer.returncode == 0, (argv, answer.stderr)
            time.sleep(0.3)  # requests flow between changes (each change is applied at once)

        time.sleep(0.5)
        carpool("rs", "set", "web-l4", "198.18.2.102:80", "weight", "3")
        carpool("rs", "set", "web-http", "198.18.2.102:80", "weight", "3")
        carpool("vs", "set", "web-l4", "scheduler", "wrr")
        carpool("vs", "add", "extra", "198.18.0.10", "8081", "--type", "http")  # HAProxy reload
        carpool("rs", "add", "extra", "198.18.2.101:80")
        carpool("vs", "set", "web-http", "scheduler", "lc")  # and another
        carpool("vs", "rm", "extra")
        carpool("vs", "set", "web-l4", "scheduler", "rr")
        carpool("rs", "set", "web-l4", "198.18.2.102:80", "weight", "1")
        carpool("rs", "set", "web-http", "198.18.2.102:80", "weight", "1")
        carpool("vs", "set", "web-http", "scheduler", "rr")
    finally:
        stop.touch()
        out4, err4 = l4.communicate(timeout=40)
        out7, err7 = l7.communicate(timeout=40)
    assert lab.unit_status(active)["dataplane"]["l7"]["reloads"] >= reloads + 2
    for name, out, err in (("l4", out4, err4), ("http", out7, err7)):
        assert out, (name, err)
        for conn in json.loads(out)["connections"]:
            assert conn["requests"] > 20, (name, conn)
            assert conn["failures"] == 0, (name, conn)
            if name == "l4":  # the kernel keeps the NAT binding: the very same TCP connection
                assert conn["reconnects"] == 0, (name, conn)


def test_https_health_check_speaks_tls(healed_lab):
    """type https: the lab servers' HTTPS on 443 is up; the same check against their plain-HTTP
    port fails (no TLS there); a stopped server goes down and comes back after heal."""
    lab = healed_lab
    active = lab.wait_for_master()

    def carpool(*argv):
        answer = lab.exec(active, ["carpool", *argv])
        assert answer.returncode == 0, (argv, answer.stderr)

    carpool("vs", "add", "tls", "198.18.0.10", "443")
    carpool("rs", "add", "tls", "198.18.2.101:443")
    carpool("rs", "add", "tls", "198.18.2.102:443")
    carpool("rs", "add", "tls", "198.18.2.103:80")  # plain HTTP: the TLS handshake fails
    for key, value in (("check.type", "https"), ("check.interval", "0.3"), ("check.path", "/")):
        carpool("vs", "set", "tls", key, value)

    def health():
        return {
            (s["address"], s["port"]): s
            for s in lab.unit_status(active)["dataplane"]["servers"]
            if s["service"] == "tls"
        }

    lab.wait_for(
        lambda: len(health()) == 3 and all(s["checks"] >= 3 for s in health().values()),
        10,
        what="three https checks each ran three times",
    )
    h = health()
    assert h[("198.18.2.101", 443)]["up"] and h[("198.18.2.102", 443)]["up"], h
    assert not h[("198.18.2.103", 80)]["up"], h
    assert "https" in h[("198.18.2.103", 80)]["last_error"], h
    lab.stop_server("r1")
    lab.wait_for(lambda: not health()[("198.18.2.101", 443)]["up"], 5, what="r1 https down")
    lab.heal()
    lab.wait_for(lambda: health()[("198.18.2.101", 443)]["up"], 5, what="r1 https up again")
    carpool("vs", "rm", "tls")


def test_established_l4_connections_survive_a_failover(healed_lab, tmp_path):
    """conntrackd puts the active unit's connection state into the standby's kernel table, so
    after a SIGTERM failover the same TCP connections carry on through the new active unit."""
    import json

    lab = healed_lab
    active = serving(lab)
    standby = other(active)
    lab.wait_for(
        lambda: all(
            lab.unit_status(u)["dataplane"]["state_sync"]["running"] for u in (active, standby)
        ),
        10,
        what="conntrackd (state sync) runs on both units",
    )
    stop = tmp_path / "stop"
    load = _keepalive_load(lab, URL, str(stop))
    try:

        def synced_to_standby():
            table = lab.exec(
                standby, ["conntrack", "-L", "-p", "tcp", "--dport", "80", "--src", "198.18.0.100"]
            ).stdout
            return table.count("ESTABLISHED") >= 3

        lab.wait_for(synced_to_standby, 10, what="the 3 connections in the standby's table")
        lab.term(active)
        lab.wait_for(
            lambda: lab.unit_status(standby)["state"] == "master", 5, what="the standby takes over"
        )
        took_over = time.monotonic()
        served = lab.unit_status(standby)["counters"]["adverts_sent"]
        # adverts_sent counts one per HA interface (eth0-eth2): 9 more are three rounds at
        # advbase 1 s, at least 2 s of requests through the new active unit
        lab.wait_for(
            lambda: lab.unit_status(standby)["counters"]["adverts_sent"] >= served + 9,
            10,
            what="requests flow for three advert rounds after the takeover",
        )
    finally:
        stop.touch()
        out, err = load.communicate(timeout=40)
    for conn in json.loads(out)["connections"]:
        assert conn["failures"] == 0 and conn["reconnects"] == 0, conn
        assert conn["requests"] > 20 and conn["last_ok"] > took_over + 1.0, conn


@pytest.mark.parametrize("how", ["failover", "term", "off"])
def test_planned_failover_finishes_l7_keepalive_connections(healed_lab, tmp_path, how):
    """A planned failover (`carpool failover`, SIGTERM) loses no HTTP request: the old unit's
    HAProxy finishes the keep-alive connections it holds (their packets that reach the new
    active unit are handed back to it), answering each one's next request with Connection:
    close; the clients' next connections go to the new active unit. Without the handover
    (`ha.handover_drain = 0`), each connection open at the switch fails once."""
    lab = healed_lab
    active = serving(lab)
    standby = other(active)
    if how == "off":
        set_key(lab, active, "ha.handover_drain", "0")
        lab.wait_for(
            lambda: (
                lab.unit_status(standby)["config"]["version"]
                == lab.unit_status(active)["config"]["version"]
            ),
            10,
            what="the standby has the version",
        )
    stop = tmp_path / "stop"
    load = _keepalive_load(lab, URL_HTTP, str(stop), connections=4)
    try:
        lab.wait_for(
            lambda: lab.unit_status(active)["dataplane"]["l7"]["running"], 5, what="HAProxy"
        )
        time.sleep(0.5)  # requests flow on the open connections
        if how == "term":
            lab.term(active)
        else:
            answer = lab.exec(active, ["carpool", "failover", "--hold", "0"])
            assert answer.returncode == 0, answer.stderr
        lab.wait_for(
            lambda: lab.unit_status(standby)["state"] == "master", 5, what="the standby takes over"
        )
        took_over = time.monotonic()
        if how != "off":
            lab.wait_for(
                lambda: lab.unit_status(standby)["handover"]["forwarding"], 5, what="a handover"
            )
        time.sleep(2.0)  # requests flow through the new active unit
    finally:
        stop.touch()
        out, err = load.communicate(timeout=40)
        if how == "off":
            set_key(lab, standby, "ha.handover_drain", "10")
    handover = lab.unit_status(standby)["handover"]
    connections = json.loads(out)["connections"]
    for conn in connections:
        assert conn["last_ok"] > took_over + 1.0, conn
    if how == "off":
        assert not handover["forwarding"] and handover["handed_back"]["packets"] == 0, handover
        assert sum(conn["failures"] for conn in connections) > 0, connections
        return
    for conn in connections:
        assert conn["failures"] == 0, (conn, handover)
    # each connection open at the switch had its next request answered by the old unit
    assert handover["handed_back"]["packets"] > 0, handover


# Connections the test opens and uses one command at a time ("NAME open", "NAME get PATH"),
# answering each with a JSON line; run in the client.
_CONNECTIONS = r"""
import http.client, json, sys, threading
host, port, conns, lock = sys.argv[1], int(sys.argv[2]), {}, threading.Lock()
def run(name, verb, rest):
    try:
        if verb == "open":
            conns[name] = http.client.HTTPConnection(host, port, timeout=10.0)
            conns[name].connect()
            answer = {"ok": True}
        else:
            conns[name].request("GET", rest[0])
            response = conns[name].getresponse()
            answer = {"ok": response.status == 200, "body": response.read().decode(errors="replace")}
    except Exception as e:
        answer = {"ok": False, "error": repr(e)}
    with lock:
        print(json.dumps({"name": name, "verb": verb, **answer}), flush=True)
for line in sys.stdin:
    name, verb, *rest = line.split()
    threading.Thread(target=run, args=(name, verb, rest)).start()
"""


class ClientConnections:
    """Named HTTP connections in the client, each command answered asynchronously."""

    def __init__(self, lab, host: str, port: int):
        import queue
        import subprocess
        import threading

        self.proc = lab.spawn(
            CLIENT,
            [lab.python(), "-c", _CONNECTIONS, host, str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.answers: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.answers.put(json.loads(line))

    def send(self, command: str) -> None:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def answer(self, timeout: float) -> dict:
        return self.answers.get(timeout=timeout)

    def close(self) -> None:
        import subprocess

        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=15)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait(timeout=5)


def _fence_drops(lab, unit: str) -> int:
    """Packets the unit's fence dropped on the way in (to a shared address it does not serve)."""
    listing = lab.exec(
        unit, ["nft", "-j", "list", "chain", "ip", "carpool_fence", "prerouting"], check=True
    ).stdout
    return sum(
        expr["counter"]["packets"]
        for item in json.loads(listing)["nftables"]
        for expr in item.get("rule", {}).get("expr", [])
        if "counter" in expr
    )


def test_a_connection_opened_on_the_old_unit_while_it_finishes_is_never_orphaned(healed_lab):
    """A client whose ARP entry still names the old unit after a planned failover sends its
    next SYN there. The old unit, finishing its own HTTP connections, must not accept it: its
    HAProxy's new worker would own the connection, the finishing ends with the old worker and
    takes the address off `lo`, and the connection's next request is lost. Dropped instead, the
    SYN is sent again and reaches the new active unit."""
    lab = healed_lab
    active = serving(lab)
    standby = other(active)
    client = ClientConnections(lab, "198.18.0.10", 8080)
    vip = "198.18.0.10"
    try:
        # the old HAProxy worker keeps a request in flight, so the finishing lasts ~3 s
        client.send("k1 open")
        assert client.answer(5)["ok"]
        client.send("k1 get /slow/3")
        lab.wait_for(
            lambda: lab.unit_status(active)["dataplane"]["l7"]["running"], 5, what="HAProxy"
        )
        answer = lab.exec(active, ["carpool", "failover", "--hold", "0"])
        assert answer.returncode == 0, answer.stderr
        lab.wait_for(
            lambda: lab.unit_status(active)["handover"]["finishing"],
            5,
            what="the old unit finishes",
        )
        lab.wait_for(
            lambda: lab.unit_status(standby)["state"] == "master", 5, what="the standby takes over"
        )
        # the client still sends to the old unit's MAC (its GARP not yet seen)
        old_mac = mac_for(UNIT_ADDR[active]["eth0"])
        lab.exec(
            CLIENT,
            ["ip", "neigh", "replace", vip, "lladdr", old_mac, "dev", "eth0", "nud", "permanent"],
            check=True,
        )
        drops = _fence_drops(lab, active)
        client.send("k2 open")
        import queue

        # the old unit sees k2's SYN while it still finishes k1: accepted, or dropped by its fence
        seen, answers = None, {}
        deadline = time.monotonic() + 5
        while seen is None and time.monotonic() < deadline:
            try:
                got = client.answer(0.05)
                answers[got["name"]] = got
                seen = "accepted" if got["name"] == "k2" else None
            except queue.Empty:
                seen = "dropped" if _fence_drops(lab, active) > drops else None
        assert seen is not None, f"k2's SYN never reached unit {active}: {answers}"
        assert "k1" not in answers, f"k1 ended before k2's SYN: not the window tested, {answers}"
        lab.exec(CLIENT, ["ip", "neigh", "del", vip, "dev", "eth0"], check=True)
        while len(answers) < 2:
            got = client.answer(12)
            answers[got["name"]] = got
        assert answers["k1"]["ok"], answers  # the slow request the old worker finished
        assert answers["k2"]["ok"], (seen, answers)  # opened, on one unit or the other
        lab.wait_for(
            lambda: not lab.unit_status(active)["handover"]["finishing"],
            10,
            what="the old unit's finishing is over",
        )
        client.send("k2 get /")
        second = client.answer(12)
        assert second["ok"], second
    finally:
        lab.exec(CLIENT, ["ip", "neigh", "del", vip, "dev", "eth0"])  # gone already: harmless
        client.close()
