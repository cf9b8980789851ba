"""The HAProxy configuration carpool writes (pure), checked by `haproxy -c` when installed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from carpool.config.document import parse_document
from carpool.dataplane.haproxy import LOCAL_ONLY, _write_tls, config_text, tls_files

IFACES = [
    {"name": "eth0", "first": "198.18.0.11", "second": "198.18.0.12", "shared": ["198.18.0.10/24"]}
]
RS = [
    {"address": "198.18.2.101", "port": 80, "weight": 3},
    {"address": "198.18.2.102", "port": 80, "enabled": False},
]


def text(tmp_path, healthy=lambda *k: True, peer_list=LOCAL_ONLY, **vs):
    doc = parse_document(
        {
            "interface": IFACES,
            "virtual_service": [
                {
                    "name": "app",
                    "address": "198.18.0.10",
                    "port": 8080,
                    "type": "http",
                    "real_server": RS,
                    **vs,
                },
                {"name": "tcp", "address": "198.18.0.10", "port": 80, "real_server": RS},
            ],
        }
    )
    return config_text(doc, tmp_path, healthy, peer_list)


def test_http_services_only_with_weights_and_disabled_servers(tmp_path):
    t = text(tmp_path)
    assert "frontend fe_app" in t and "bind 198.18.0.10:8080" in t and "fe_tcp" not in t
    assert "server rs1 198.18.2.101:80 weight 3\n" in t
    assert "server rs2 198.18.2.102:80 weight 1 disabled" in t
    assert "option forwardfor" in t and "balance roundrobin" in t


def test_down_servers_are_disabled(tmp_path):
    t = text(tmp_path, healthy=lambda vs, a, p: a != "198.18.2.101")
    assert "server rs1 198.18.2.101:80 weight 3 disabled" in t


@pytest.mark.parametrize(
    "vs, line",
    [
        ({"cookie": True}, "cookie CARPOOL insert indirect nocache"),
        ({"scheduler": "sh"}, "balance source"),
        (
            {"persistence": 60},
            "    stick-table type ip size 256k expire 60s peers carpool\n    stick on src\n",
        ),
        ({"scheduler": "lc"}, "balance leastconn"),
        (
            {"when_down": "sorry", "sorry_server": "198.18.2.200"},
            "server sorry 198.18.2.200:8080 backup",
        ),
    ],
)
def test_options(tmp_path, vs, line):
    assert line in text(tmp_path, **vs)


def test_persistence_tables_go_to_the_partner_over_the_heartbeat_link(tmp_path):
    assert "peers" not in text(tmp_path) and "stick" not in text(
        tmp_path, cookie=True, persistence=60
    )
    t = text(
        tmp_path,
        persistence=60,
        scheduler="wrr",
        peer_list=(("second", "198.18.1.12"), ("first", "198.18.1.11")),
    )
    assert "balance roundrobin" in t and "    localpeer second\n" in t
    assert (
        "peers carpool\n    peer second 198.18.1.12:6974\n    peer first 198.18.1.11:6974\n"
    ) in t
    alone = text(tmp_path, persistence=60)
    assert "peers carpool\n    peer first 127.0.0.1:6974\n\n" in alone


@pytest.mark.skipif(
    not shutil.which("haproxy") and not Path("/usr/sbin/haproxy").exists(),
    reason="haproxy not installed",
)
def test_haproxy_accepts_it(tmp_path):
    cfg = tmp_path / "h.cfg"
    for vs in ({"cookie": True}, {"persistence": 60, "scheduler": "wrr"}):
        cfg.write_text(
            text(tmp_path, peer_list=(("first", "127.0.0.1"), ("second", "198.18.1.12")), **vs)
        )
        proc = subprocess.run(
            ["/usr/sbin/haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr


def https_doc(**vs):
    from carpool.lab.pki import LabCA

    ca = LabCA()
    www, api = ca.issue("www.example.test"), ca.issue("api.example.test", kind="rsa")
    return parse_document(
        {
            "interface": IFACES,
            "certificate": [
                {"name": "www", "chain": www.chain, "key": www.key},
                {"name": "api", "chain": api.chain, "key": api.key},
                {"name": "lab-ca", "chain": ca.pem},
            ],
            "virtual_service": [
                {
                    "name": "site",
                    "address": "198.18.0.10",
                    "port": 443,
                    "type": "https",
                    "certificate": ["www", "api"],
                    "real_server": RS,
                    **vs,
                },
            ],
        }
    )


def test_an_https_service_terminates_tls_with_its_certificates_by_sni(tmp_path):
    doc = https_doc(hsts=31536000, redirect_http=True, backend_tls=True, backend_ca="lab-ca")
    cfg = config_text(doc, tmp_path)
    tls = tmp_path / "tls"
    assert (
        f"    bind 198.18.0.10:443 ssl crt {tls}/www.pem crt {tls}/api.pem alpn h2,http/1.1 "
        "ssl-min-ver TLSv1.2 ciphers ECDHE-ECDSA-AES128-GCM-SHA256:" in cfg
    )
    assert "    http-request set-header X-Forwarded-Proto https" in cfg
    assert '    http-response set-header Strict-Transport-Security "max-age=31536000"' in cfg
    assert "    bind 198.18.0.10:80\n    http-request redirect scheme https code 301" in cfg
    assert f"weight 3 ssl verify required ca-file {tls}/ca/lab-ca.pem alpn http/1.1" in cfg
    files = tls_files(doc)
    assert sorted(files) == ["api.pem", "ca/lab-ca.pem", "www.pem"]
    assert "PRIVATE KEY" in files["www.pem"] and "PRIVATE KEY" not in files["ca/lab-ca.pem"]
    modern = config_text(https_doc(tls_profile="modern"), tmp_path)
    assert "alpn h2,http/1.1 ssl-min-ver TLSv1.3 ciphersuites TLS_AES_128_GCM_SHA256:" in modern


@pytest.mark.skipif(not Path("/usr/sbin/haproxy").exists(), reason="haproxy not installed")
def test_haproxy_accepts_an_https_service_with_its_files(tmp_path):
    for vs in (
        {"hsts": 600, "redirect_http": True, "backend_tls": True, "backend_ca": "lab-ca"},
        {"tls_profile": "modern", "backend_tls": True, "cookie": True},
    ):
        doc = https_doc(**vs)
        _write_tls(tmp_path / "tls", tls_files(doc))
        assert oct((tmp_path / "tls" / "www.pem").stat().st_mode & 0o777) == "0o600"
        cfg = tmp_path / "h.cfg"
        cfg.write_text(config_text(doc, tmp_path))
        proc = subprocess.run(
            ["/usr/sbin/haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr


RULES = [
    {
        "host": ["API.lab.test"],
        "path_prefix": ["/v1/", "/v2/"],
        "pool": "api",
        "set_request_header": ["X-Route: api 100%"],
        "delete_response_header": ["Server"],
    },
    {
        "path_regex": "^/old/[a-z]+$",
        "method": ["GET", "HEAD"],
        "redirect": "/new%20page/",
        "redirect_code": 301,
    },
    {
        "header": "X-Canary",
        "header_value": "yes",
        "pool": "canary",
        "set_response_header": ["X-Pool: canary"],
    },
]
POOLS = [
    {
        "name": "api",
        "scheduler": "lc",
        "persistence": 30,
        "real_server": [{"address": "2001:2:0:2::103", "port": 8080}],
    },
    {"name": "canary", "cookie": True, "real_server": [{"address": "198.18.2.104", "port": 80}]},
]


def test_content_rules_pick_a_pool_redirect_and_edit_headers_in_order(tmp_path):
    cfg = text(tmp_path, rule=RULES, pool=POOLS)
    v = "txn.carpool_rule"
    assert (
        f"    http-request set-var({v}) int(1) if !{{ var({v}) -m found }} "
        "{ req.hdr(host),field(1,:),lower -m str 'api.lab.test' } { path_beg '/v1/' '/v2/' }"
    ) in cfg
    assert (
        f"int(2) if !{{ var({v}) -m found }} {{ path_reg '^/old/[a-z]+$' }} {{ method GET HEAD }}"
        in cfg
    )
    assert f"int(3) if !{{ var({v}) -m found }} {{ req.hdr(X-Canary) -m sub 'yes' }}" in cfg
    assert (
        f"    http-request redirect location '/new%%20page/' code 301 if {{ var({v}) -m int 2 }}"
        in cfg
    )
    assert f"    http-request set-header X-Route 'api 100%%' if {{ var({v}) -m int 1 }}" in cfg
    assert f"    http-response del-header Server if {{ var({v}) -m int 1 }}" in cfg
    assert f"    use_backend be_app:api if {{ var({v}) -m int 1 }}" in cfg
    assert f"    use_backend be_app:canary if {{ var({v}) -m int 3 }}" in cfg
    # each pool its own backend: scheduler, persistence (ipv6 table? the service is IPv4: ip)
    assert "backend be_app:api\n    balance leastconn\n    stick-table type ip" in cfg
    assert "    server rs1 [2001:2:0:2::103]:8080 weight 1" in cfg
    assert (
        "backend be_app:canary\n    balance roundrobin\n    option forwardfor\n    cookie CARPOOL"
        in cfg
    )
    assert cfg.index("use_backend") < cfg.index("default_backend be_app")


@pytest.mark.skipif(not Path("/usr/sbin/haproxy").exists(), reason="haproxy not installed")
def test_haproxy_accepts_content_rules(tmp_path):
    cfg = tmp_path / "h.cfg"
    cfg.write_text(text(tmp_path, rule=RULES, pool=POOLS))
    proc = subprocess.run(
        ["/usr/sbin/haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "rule, want",
    [
        (
            {"pool": "nope"},
            "virtual_service[0].rule[0].pool: no pool 'nope' (there are: api, canary)",
        ),
        ({"path_regex": "(["}, "virtual_service[0].rule[0].path_regex: not a regular expression"),
        (
            {"path_prefix": ["/it's"]},
            "virtual_service[0].rule[0].path_prefix[0]: must not contain a single quote",
        ),
        (
            {"set_request_header": ["no colon"]},
            "virtual_service[0].rule[0].set_request_header[0]: write NAME: VALUE",
        ),
        ({"header": "Bad Name"}, "virtual_service[0].rule[0].header: not a header name"),
        (
            {"delete_request_header": ["X#y"]},
            "virtual_service[0].rule[0].delete_request_header[0]: not a header name",
        ),
        (
            {"pool": "api", "redirect": "/x"},
            "virtual_service[0].rule[0].redirect: a rule redirects or sends to a pool, not both",
        ),
        (
            {"redirect": "ftp://x"},
            "virtual_service[0].rule[0].redirect: a path (/...) or an http(s):// URL",
        ),
        ({"method": ["BREW"]}, "virtual_service[0].rule[0].method[0]: must be one of"),
    ],
)
def test_a_bad_rule_is_named_by_its_key(rule, want):
    from carpool.config.document import DocumentError

    doc = {
        "interface": IFACES,
        "virtual_service": [
            {
                "name": "app",
                "address": "198.18.0.10",
                "port": 8080,
                "type": "http",
                "real_server": RS,
                "pool": POOLS,
                "rule": [rule],
            },
        ],
    }
    with pytest.raises(DocumentError) as e:
        parse_document(doc)
    assert [str(p) for p in e.value.problems][0].startswith(want), e.value.problems


def test_server_controls_fixed_order_limits_slow_start_and_a_quorum(tmp_path):
    servers = [
        {"address": "198.18.2.101", "port": 80, "max_connections": 100, "slow_start": 30},
        {"address": "198.18.2.102", "port": 80},
        {"address": "198.18.2.103", "port": 80},
    ]
    cfg = text(tmp_path, scheduler="fixed", real_server=servers)
    assert "    server rs1 198.18.2.101:80 weight 1 maxconn 100 slowstart 30s\n" in cfg
    assert "    server rs2 198.18.2.102:80 weight 1 backup\n" in cfg
    assert "    server rs3 198.18.2.103:80 weight 1 backup\n" in cfg
    quorum = text(tmp_path, min_up=2, real_server=servers)
    assert "    http-request deny deny_status 503 if { nbsrv(be_app) lt 2 }" in quorum
    sorry = text(
        tmp_path, min_up=2, when_down="sorry", sorry_server="198.18.2.200", real_server=servers
    )
    assert "    use_backend sorry_app if { nbsrv(be_app) lt 2 }" in sorry
    assert "backend sorry_app\n    server sorry 198.18.2.200:8080\n" in sorry
    if Path("/usr/sbin/haproxy").exists():
        for config in (cfg, quorum, sorry):
            (tmp_path / "h.cfg").write_text(config)
            proc = subprocess.run(
                ["/usr/sbin/haproxy", "-c", "-f", str(tmp_path / "h.cfg")],
                capture_output=True,
                text=True,
            )
            assert proc.returncode == 0, proc.stdout + proc.stderr


def test_l4_fixed_takes_the_first_healthy_server_and_a_quorum_empties_the_pool():
    from carpool.dataplane.nft import pool

    doc = parse_document(
        {
            "interface": IFACES,
            "virtual_service": [
                {
                    "name": "tcp",
                    "address": "198.18.0.10",
                    "port": 80,
                    "scheduler": "fixed",
                    "real_server": [{"address": f"198.18.2.10{i}", "port": 80} for i in (1, 2, 3)],
                },
            ],
        }
    )
    vs = doc.virtual_service[0]
    down = {"198.18.2.101"}
    assert pool(vs, lambda _s, a, _p: a not in down) == [("198.18.2.102", 80, 1)]
    quorum = vs.model_copy(update={"scheduler": "rr", "min_up": 3})
    assert pool(quorum, lambda _s, a, _p: a not in down) == []  # 2 up, 3 needed: down
    assert len(pool(quorum, lambda *_: True)) == 3


@pytest.mark.parametrize(
    "change, want",
    [
        (
            {
                "type": "l4",
                "real_server": [{"address": "198.18.2.101", "port": 80, "slow_start": 5}],
            },
            "virtual_service[0].real_server[0].slow_start: is for type http or https (not l4)",
        ),
        (
            {"scheduler": "fixed", "min_up": 2},
            "virtual_service[0].min_up: is for rr, wrr, lc and sh",
        ),
        (
            {"scheduler": "fixed", "persistence": 60},
            "virtual_service[0].persistence: scheduler fixed keeps no persistence",
        ),
        (
            {"min_up": 3},
            "virtual_service[0].min_up: 3 healthy servers needed but the service has 2",
        ),
        (
            {"pool": [{"name": "p", "scheduler": "fixed", "cookie": True}]},
            "virtual_service[0].pool[0].cookie: scheduler fixed keeps no persistence",
        ),
    ],
)
def test_server_controls_are_refused_where_they_do_not_apply(change, want):
    from carpool.config.document import DocumentError

    vs = {"name": "app", "address": "198.18.0.10", "port": 8080, "type": "http", "real_server": RS}
    with pytest.raises(DocumentError) as e:
        parse_document({"interface": IFACES, "virtual_service": [{**vs, **change}]})
    assert str(e.value.problems[0]).startswith(want), e.value.problems


def test_the_tls_directory_holds_only_what_is_served(tmp_path):
    doc = https_doc(backend_tls=True, backend_ca="lab-ca")
    tls = tmp_path / "tls"
    (tls / "old").mkdir(parents=True)
    (tls / "gone.pem").write_text("a key nothing serves")
    _write_tls(tls, tls_files(doc))
    found = sorted(str(p.relative_to(tls)) for p in tls.rglob("*") if p.is_file())
    assert found == ["api.pem", "ca/lab-ca.pem", "www.pem"]
