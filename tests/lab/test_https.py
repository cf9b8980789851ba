"""https virtual services on the live pair (issue 15): certificates uploaded through the REST API
serve TLS to a client that verifies them against the lab CA, SNI picks between two, h2 is
negotiated, port 80 redirects; the key reaches the standby (0600) and a failover keeps serving
the same certificate; re-encryption to the TLS real servers is verified against a CA in the
document (and fails against the wrong one); a certificate near its end shows in status,
/metrics and the doctor; content rules route by host and path to pools and edit headers."""

from __future__ import annotations

import json
import os
import select
import stat
import subprocess
import time

import pytest
from webclient import client, other, wui_ready

from carpool.lab.pki import LabCA
from carpool.lab.topology import CLIENT

LAB_OPTIONS = {"servers": 2, "overrides": {"virtual_service": []}}
VIP = "198.18.0.10"
SERVERS = {"cp-r1", "cp-r2"}
CA = LabCA()
WWW = CA.issue("www.lab.test", VIP)
API = CA.issue("api.lab.test")
TAKEOVER = 10.0

_PEER = (
    "import json, socket, ssl, sys\n"
    "name, address, port, ca = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]\n"
    "ctx = ssl.create_default_context(cafile=ca)\n"
    "ctx.check_hostname = name != '-'\n"
    "ctx.set_alpn_protocols(['h2', 'http/1.1'])\n"
    "with socket.create_connection((address, port), timeout=5) as raw:\n"
    "    with ctx.wrap_socket(raw, server_hostname=None if name == '-' else name) as tls:\n"
    "        subject = dict(x[0] for x in tls.getpeercert()['subject'])\n"
    "        print(json.dumps({'cn': subject['commonName'], 'alpn': tls.selected_alpn_protocol(),\n"
    "                          'version': tls.version(),\n"
    "                          'serial': tls.getpeercert()['serialNumber']}))\n"
)


@pytest.fixture(scope="module")
def ca_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("pki") / "lab-ca.pem"
    path.write_text(CA.pem)
    return str(path)


@pytest.fixture(scope="module")
def site(lab, ca_file):
    """The https service `site` on 198.18.0.10:443 (certificates www and api, uploaded
    through the REST API), with the port 80 redirect and HSTS; its active unit."""
    active = lab.wait_for_master()
    wui_ready(lab)
    with client(active, lab=lab) as c:
        for name, cert in (("www", WWW), ("api", API)):
            r = c.post(
                "/api/v1/certificates", json={"name": name, "chain": cert.chain, "key": cert.key}
            )
            assert r.status_code == 201, r.text
        r = c.post(
            "/api/v1/virtual-services",
            json={
                "name": "site",
                "address": VIP,
                "port": 443,
                "type": "https",
                "certificate": ["www", "api"],
                "redirect_http": True,
                "hsts": 600,
                "check": {"type": "http", "interval": 0.5, "timeout": 0.5},
                "real_server": [{"address": f"198.18.2.10{i}", "port": 80} for i in (1, 2)],
            },
        )
        assert r.status_code == 201, r.text
    lab.wait_for(lambda: fetch(lab, ca_file)[0] == "200", 15, what="site serves https")
    return active


def peer(lab, ca_file: str, name: str, port: int = 443) -> dict:
    """What a verifying TLS client in cp-c1 sees: the certificate's CN, ALPN, TLS version."""
    proc = lab.exec(CLIENT, [lab.python(), "-I", "-c", _PEER, name, VIP, str(port), ca_file])
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def fetch(lab, ca_file: str, url: str = "https://www.lab.test/", *extra: str) -> tuple[str, ...]:
    """(status, http version, body, headers) of curl in cp-c1, verifying against the lab CA,
    the lab names resolved to the shared address; ("000",) when it failed."""
    argv = ["curl", "-sS", "--max-time", "5", "-D", "/dev/stderr"]
    argv += ["--cacert", ca_file] if ca_file else []
    for host in ("www.lab.test", "api.lab.test"):
        argv += ["--resolve", f"{host}:443:{VIP}", "--resolve", f"{host}:8443:{VIP}"]
    proc = lab.exec(CLIENT, [*argv, *extra, "-w", "\n@@%{http_code} %{http_version}", url])
    if proc.returncode != 0 or "\n@@" not in proc.stdout:
        return ("000",)
    body, _, tail = proc.stdout.rpartition("\n@@")
    code, version = tail.split()
    return code, version, body.strip(), proc.stderr.lower()


def test_sni_picks_the_certificate_and_h2_is_negotiated(lab, site, ca_file):
    seen = peer(lab, ca_file, "www.lab.test")
    assert (seen["cn"], seen["alpn"], seen["version"]) == ("www.lab.test", "h2", "TLSv1.3")
    assert peer(lab, ca_file, "api.lab.test")["cn"] == "api.lab.test"
    assert peer(lab, ca_file, "-")["cn"] == "www.lab.test"  # no SNI: the first certificate
    code, version, body, head = fetch(lab, ca_file, "https://www.lab.test/", "--http2")
    assert (code, version) == ("200", "2") and body in SERVERS
    assert "strict-transport-security: max-age=600" in head
    seen = {fetch(lab, ca_file, "https://api.lab.test/")[2] for _ in range(6)}
    assert seen == SERVERS


def test_port_80_redirects_to_https(lab, site, ca_file):
    code, _, _, head = fetch(lab, ca_file, f"http://{VIP}/some/path?q=1")
    assert code == "301" and f"location: https://{VIP}/some/path?q=1" in head


def test_the_key_reaches_the_standby_private_and_no_view_shows_it(lab, site):
    standby = other(site)
    lab.wait_for(
        lambda: lab.unit_status(standby)["config"] == lab.unit_status(site)["config"],
        10,
        what="the standby has the certificates' version",
    )
    for unit in (site, standby):
        path = lab.state_dir(unit) / "haproxy" / "tls" / "www.pem"
        lab.wait_for(path.exists, 10, what=f"{path} written")
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert WWW.key.strip() in path.read_text()
        listed = lab.exec(unit, ["carpool", "cert", "list"], check=True).stdout
        assert "www: CN=www.lab.test" in listed and "used by: site" in listed
        with client(unit, lab=lab) as c:
            shown = c.get("/api/v1/config").text + c.get("/api/v1/certificates").text
        assert "PRIVATE KEY" not in shown and "(stored) sha256:" in shown


def test_reencryption_to_the_real_servers_is_verified_against_the_documents_ca(lab, site, ca_file):
    servers_cert = (lab.dir / "tls" / "server.pem").read_text()
    with client(site, lab=lab) as c:
        for name, chain in (("lab-servers", servers_cert), ("lab-ca", CA.pem)):
            assert (
                c.post("/api/v1/certificates", json={"name": name, "chain": chain}).status_code
                == 201
            )
        service = {
            "name": "site-tls",
            "address": VIP,
            "port": 8443,
            "type": "https",
            "certificate": ["www"],
            "backend_tls": True,
            "backend_ca": "lab-servers",
            "check": {"type": "https", "interval": 0.5, "timeout": 0.5},
            "real_server": [{"address": f"198.18.2.10{i}", "port": 443} for i in (1, 2)],
        }
        assert c.post("/api/v1/virtual-services", json=service).status_code == 201
        url = "https://www.lab.test:8443/"
        lab.wait_for(lambda: fetch(lab, ca_file, url)[0] == "200", 15, what="site-tls serves")
        assert {fetch(lab, ca_file, url)[2] for _ in range(6)} == SERVERS
        # the servers' certificate is not the lab CA's: HAProxy refuses them, the client gets 503
        r = c.put("/api/v1/virtual-services/site-tls", json={**service, "backend_ca": "lab-ca"})
        assert r.status_code == 200, r.text
        lab.wait_for(lambda: fetch(lab, ca_file, url)[0] == "503", 15, what="verification fails")
        assert c.delete("/api/v1/virtual-services/site-tls").status_code == 200


def test_a_certificate_near_its_end_shows_in_status_metrics_and_doctor(lab, site):
    soon = CA.issue("soon.lab.test", days=5)
    with client(site, lab=lab) as c:
        r = c.post(
            "/api/v1/certificates", json={"name": "soon", "chain": soon.chain, "key": soon.key}
        )
        assert r.status_code == 201, r.text
        try:
            lab.wait_for(
                lambda: any(
                    "certificate soon expires in" in w for w in lab.unit_status(site)["warnings"]
                ),
                10,
                what="the status warning",
            )
            metrics = c.get("/metrics").text
            assert 'carpool_certificate_expiry_timestamp_seconds{name="soon"}' in metrics
            proc = lab.exec(site, ["carpool", "doctor", "--json"], timeout=60)
            [check] = [x for x in json.loads(proc.stdout)["checks"] if x["name"] == "certificates"]
            assert not check["ok"] and "soon" in check["hint"] and proc.returncode == 1
        finally:
            assert c.delete("/api/v1/certificates/soon").status_code == 200


def test_a_failover_keeps_serving_the_same_certificate(healed_lab, site, ca_file):
    lab = healed_lab
    active = lab.wait_for_master()
    lab.term(active)
    lab.wait_for(
        lambda: lab.unit_status(other(active))["state"] == "master",
        TAKEOVER,
        what="the partner takes over",
    )
    lab.wait_for(lambda: fetch(lab, ca_file)[0] == "200", TAKEOVER, what="https after failover")
    assert peer(lab, ca_file, "www.lab.test")["cn"] == "www.lab.test"


def test_content_rules_route_by_host_and_path_and_edit_headers(lab, site):
    """An http service whose rules send api.lab.test to the pool `api` (cp-r2 only, its own
    health check), redirect /old/..., and set a response header; the rest goes to cp-r1."""
    service = {
        "name": "app",
        "address": VIP,
        "port": 8080,
        "type": "http",
        "check": {"type": "http", "interval": 0.5, "timeout": 0.5},
        "real_server": [{"address": "198.18.2.101", "port": 80}],
        "pool": [
            {
                "name": "api",
                "check": {"type": "http", "interval": 0.5, "timeout": 0.5},
                "real_server": [{"address": "198.18.2.102", "port": 80}],
            }
        ],
        "rule": [
            {"host": ["api.lab.test"], "pool": "api", "set_response_header": ["X-Pool: api"]},
            {"path_prefix": ["/old/"], "redirect": "/new/", "redirect_code": 301},
            {"path_prefix": ["/"], "delete_response_header": ["X-Server"]},
        ],
    }
    active = lab.wait_for_master()  # an earlier test may have failed the pair over
    with client(active, lab=lab) as c:
        assert c.post("/api/v1/virtual-services", json=service).status_code == 201
    try:

        def get(path: str, host: str) -> tuple[str, ...]:
            return fetch(lab, "", f"http://{VIP}:8080{path}", "-H", f"Host: {host}")

        lab.wait_for(
            lambda: get("/", "api.lab.test")[:3] == ("200", "1.1", "cp-r2"),
            15,
            what="the api pool serves api.lab.test",
        )
        code, _, body, head = get("/", "api.lab.test")
        assert "x-pool: api" in head and "x-server: cp-r2" in head
        for _ in range(4):  # every other host: the service's own servers, X-Server removed
            code, _, body, head = get("/", "www.lab.test")
            assert (code, body) == ("200", "cp-r1") and "x-server" not in head
        code, _, _, head = get("/old/page", "www.lab.test")
        assert code == "301" and "location: /new/" in head
        servers = lab.unit_status(active)["dataplane"]["servers"]
        assert {
            (s["service"], s["address"]) for s in servers if s["service"].startswith("app")
        } == {
            ("app", "198.18.2.101"),
            ("app:api", "198.18.2.102"),
        }
    finally:
        with client(active, lab=lab) as c:
            assert c.delete("/api/v1/virtual-services/app").status_code == 200


def test_fixed_order_and_a_quorum_follow_the_servers_health(healed_lab, site):
    """`fixed`: cp-r1 takes everything while it is up, cp-r2 once it is down; `min_up = 2`:
    one server down and the service answers 503."""
    lab = healed_lab
    check = {"type": "http", "interval": 0.3, "timeout": 0.3, "rise": 1, "fall": 1}
    pool = [{"address": f"198.18.2.10{i}", "port": 80} for i in (1, 2)]
    services = [
        {"name": "order", "port": 8081, "scheduler": "fixed"},
        {"name": "quorum", "port": 8082, "min_up": 2},
    ]
    active = lab.wait_for_master()
    with client(active, lab=lab) as c:
        for s in services:
            body = {**s, "address": VIP, "type": "http", "check": check, "real_server": pool}
            assert c.post("/api/v1/virtual-services", json=body).status_code == 201

    def answers(port: int, n: int = 4) -> set[str]:
        return {
            (lambda r: r[2] if r[0] == "200" else r[0])(fetch(lab, "", f"http://{VIP}:{port}/"))
            for _ in range(n)
        }

    try:
        lab.wait_for(lambda: answers(8081) == {"cp-r1"}, 15, what="fixed: cp-r1 takes all")
        lab.wait_for(lambda: answers(8082) == SERVERS, 15, what="quorum: both serve")
        lab.stop_server("r1")
        lab.wait_for(lambda: answers(8081) == {"cp-r2"}, 15, what="fixed: cp-r2 once r1 is down")
        lab.wait_for(lambda: answers(8082) == {"503"}, 15, what="quorum lost: 503")
    finally:
        with client(active, lab=lab) as c:
            for s in services:
                assert c.delete(f"/api/v1/virtual-services/{s['name']}").status_code == 200


def summed(points: list, since: float, field: str) -> float:
    """What a rate series counted after `since`: each rate times its interval."""
    times = [t for t, _p in points]
    return sum(
        p.get(field, 0.0) * (t - before)
        for (t, p), before in zip(points[1:], times, strict=False)
        if before >= since
    )


@pytest.mark.parametrize("kind", ["http", "l4"])
def test_statistics_count_what_the_client_sent(lab, site, kind):
    """The traffic statistics of a service count exactly the requests (http) or connections
    (l4) a client sent, per server too, and the bytes it got (sampled every 5 s; a rate times
    its interval is what happened in it); l4 also counts the flows open at a sample."""
    active = lab.wait_for_master()
    name, port, size = f"counted-{kind}", 8083 if kind == "http" else 8084, 10_000
    service = {
        "name": name,
        "address": VIP,
        "port": port,
        "type": kind,
        "check": {"type": "tcp", "interval": 1.0},
        "real_server": [{"address": f"198.18.2.10{i}", "port": 80} for i in (1, 2)],
    }
    field = "requests" if kind == "http" else "connections"
    with client(active, lab=lab) as c:
        assert c.post("/api/v1/virtual-services", json=service).status_code == 201

        def series(key: str) -> list:
            return c.get("/api/v1/stats", params={"key": key}).json()["series"][key]

        holder = None
        try:
            lab.wait_for(lambda: len(series(name)) >= 1, 20, what="a first rate sampled")
            baseline = series(name)[-1][0]
            sent = 40
            for _ in range(sent):
                assert fetch(lab, "", f"http://{VIP}:{port}/bytes/{size}")[0] == "200"
            lab.wait_for(
                lambda: round(summed(series(name), baseline, field)) >= sent,
                20,
                what="the requests counted",
            )
            assert round(summed(series(name), baseline, field)) == sent
            keys = [f"{name}/198.18.2.10{i}:80" for i in (1, 2)]
            per_server = [summed(series(k), baseline, field) for k in keys]
            assert round(sum(per_server)) == sent and all(n > 0 for n in per_server)
            sent_bytes = summed(series(name), baseline, "bytes_out")
            assert sent * size <= sent_bytes <= sent * (size + 1000), sent_bytes  # + headers
            if kind == "l4":
                holder = Holder(lab, port)  # one connection left open
                lab.wait_for(
                    lambda: series(name)[-1][1].get("current") == 1, 20, what="one open flow"
                )
                assert sum(series(k)[-1][1].get("current", 0) for k in keys) == 1
        finally:
            if holder is not None:
                holder.close()
            assert c.delete(f"/api/v1/virtual-services/{name}").status_code == 200


def test_a_renewed_certificate_is_served_at_once(lab, site, ca_file):
    """A renewal changes the certificate files only (the HAProxy text names them): the unit
    reloads all the same, and the next handshake shows the new certificate."""
    active = lab.wait_for_master()
    before = peer(lab, ca_file, "api.lab.test")["serial"]
    renewed = CA.issue("api.lab.test", days=365)
    with client(active, lab=lab) as c:
        r = c.put("/api/v1/certificates/api", json={"chain": renewed.chain, "key": renewed.key})
        assert r.status_code == 200, r.text
    lab.wait_for(
        lambda: peer(lab, ca_file, "api.lab.test")["serial"] != before,
        10,
        what="the renewed certificate served",
    )


# A client holding one HTTP/1.1 connection: each line on stdin is a path to GET on it; each
# answer a JSON line (the body, or the error that ended the connection), with seconds taken.
_HOLDER = (
    "import http.client, json, sys, time\n"
    "conn = http.client.HTTPConnection(sys.argv[1], int(sys.argv[2]), timeout=20)\n"
    "conn.connect()\n"
    "conn.auto_open = 0  # a reset connection must not be opened again behind our back\n"
    "print(json.dumps({'open': True}), flush=True)\n"
    "for line in sys.stdin:\n"
    "    start = time.monotonic()\n"
    "    try:\n"
    "        conn.request('GET', line.strip())\n"
    "        out = {'body': conn.getresponse().read().decode().strip()}\n"
    "    except Exception as e:\n"
    "        out = {'error': type(e).__name__}\n"
    "    out['seconds'] = round(time.monotonic() - start, 2)\n"
    "    print(json.dumps(out), flush=True)\n"
)


class Holder:
    """One connection from cp-c1 to VIP:port, kept across the test's steps."""

    def __init__(self, lab, port: int):
        self.proc = lab.spawn(
            CLIENT,
            [lab.python(), "-I", "-c", _HOLDER, VIP, str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.answer() == {"open": True}

    def answer(self) -> dict:
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        assert ready, "the holding client did not answer within 30 s"
        return json.loads(self.proc.stdout.readline() or "{}")

    def get(self, path: str) -> dict:
        self.proc.stdin.write(path + "\n")
        self.proc.stdin.flush()
        return self.answer()

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(5)


@pytest.mark.parametrize("kind", ["l4", "http"])
def test_drain_finishes_established_connections_then_cuts_them_at_the_timeout(
    healed_lab, site, kind
):
    """A server set to weight 0 gets no new connections and its established ones go on; at
    the service's drain_timeout what is left is cut: an L4 flow is reset on its next packet,
    an http request still running on the server is closed (in the worker the drain's reload
    left finishing it)."""
    lab = healed_lab
    port, timeout = (8090, 4) if kind == "l4" else (8091, 3)
    servers = [{"address": f"198.18.2.10{i}", "port": 80} for i in (1, 2)]
    service = {
        "name": f"drain-{kind}",
        "address": VIP,
        "port": port,
        "type": kind,
        "scheduler": "fixed",
        "drain_timeout": timeout,
        "check": {"type": "tcp", "interval": 0.3, "timeout": 0.3, "rise": 1, "fall": 1},
        "real_server": servers,
    }
    active = lab.wait_for_master()

    def answers(n: int = 3) -> set[str]:
        return {
            (lambda r: r[2] if r[0] == "200" else r[0])(fetch(lab, "", f"http://{VIP}:{port}/"))
            for _ in range(n)
        }

    with client(active, lab=lab) as c:
        assert c.post("/api/v1/virtual-services", json=service).status_code == 201
        holder = None
        try:
            lab.wait_for(lambda: answers() == {"cp-r1"}, 15, what="fixed: cp-r1 takes all")
            holder = Holder(lab, port)
            if kind == "l4":
                assert holder.get("/").get("body") == "cp-r1"
            else:  # a request the server answers after 20 s: in flight through the drain
                holder.proc.stdin.write("/slow/20\n")
                holder.proc.stdin.flush()
            drained = [{**servers[0], "weight": 0}, servers[1]]
            r = c.put(
                f"/api/v1/virtual-services/{service['name']}",
                json={**service, "real_server": drained},
            )
            assert r.status_code == 200, r.text
            lab.wait_for(lambda: answers() == {"cp-r2"}, 10, what="new connections to cp-r2")
            if kind == "l4":
                kept = holder.get("/")  # before the timeout: the established flow goes on
                assert kept.get("body") == "cp-r1", kept
                cut = {}
                for _ in range(40):  # at most ~20 s: the flow is reset on a packet past the timeout
                    cut = holder.get("/")
                    if "error" in cut:
                        break
                    assert cut.get("body") == "cp-r1", cut
                    time.sleep(0.5)  # the client's pace, not a wait for a state
                assert cut.get("error") in ("ConnectionResetError", "RemoteDisconnected"), cut
            else:
                cut = holder.answer()  # cut before cp-r1 answered: HAProxy says 502
                assert "error" in cut or "502 Bad Gateway" in cut["body"], cut
                assert timeout - 1 <= cut["seconds"] < 15, cut
            log = lab.log_tail(active, 400)
            assert f"drain timeout ({timeout} s) of drain-{kind}/198.18.2.101:80 ran out" in log
        finally:
            if holder is not None:
                holder.close()
            assert c.delete(f"/api/v1/virtual-services/{service['name']}").status_code == 200
