"""Certificates in the document (config/certs.py, [[certificate]]): a chain and its key are
checked where they are stored — PEM only, leaf first and each certificate signed by the next,
the key the leaf's — and described (names, dates, key type) without the key."""

from __future__ import annotations

import copy
import time

import pytest

from carpool.config import certs
from carpool.config.document import DocumentError, parse_document
from carpool.lab.pki import LabCA

CA = LabCA()
WWW = CA.issue("www.example.test", "198.18.0.10")
API = CA.issue("api.example.test", kind="rsa")

BASE = {
    "interface": [
        {
            "name": "eth0",
            "first": "198.18.0.11",
            "second": "198.18.0.12",
            "shared": ["198.18.0.10/24"],
        },
        {"name": "eth1", "first": "198.18.1.1", "second": "198.18.1.2", "heartbeat": True},
    ],
    "virtual_service": [
        {
            "name": "web",
            "address": "198.18.0.10",
            "port": 443,
            "type": "https",
            "certificate": ["www", "api"],
            "real_server": [{"address": "198.18.2.101", "port": 80}],
        }
    ],
    "certificate": [
        {"name": "www", "chain": WWW.chain, "key": WWW.key},
        {"name": "api", "chain": API.chain, "key": API.key},
        {"name": "lab-ca", "chain": CA.pem},
    ],
}


def problems(doc) -> list[str]:
    try:
        parse_document(doc)
    except DocumentError as e:
        return [str(p) for p in e.problems]
    return []


def with_(path: str, value) -> dict:
    doc = copy.deepcopy(BASE)
    here = doc
    *parents, last = path.split(".")
    for step in parents:
        here = here[int(step)] if isinstance(here, list) else here[step]
    if isinstance(here, list):
        here[int(last)] = value
    else:
        here[last] = value
    return doc


def test_a_valid_chain_and_key_are_described_without_the_key():
    assert problems(BASE) == []
    doc = parse_document(BASE)
    www, api, ca = (c.info() for c in doc.certificate)
    assert www.names == ("www.example.test", "198.18.0.10")
    assert www.key_type == "ECDSA P-256" and api.key_type == "RSA 2048"
    assert www.chain_length == 2 and www.has_key and not ca.has_key
    assert www.not_before < time.time() < www.not_after
    assert "BEGIN" not in str(www.as_dict()) and len(www.fingerprint) == 64
    assert doc.certificates_used() == {"www": ["web"], "api": ["web"], "lab-ca": []}


@pytest.mark.parametrize(
    "path, value, want",
    [
        ("certificate.0.key", API.key, "certificate[0].key: is not the key of the chain's first"),
        (
            "certificate.0.chain",
            CA.pem + WWW.leaf,
            "certificate[0].chain: certificate 2 did not sign",
        ),
        (
            "certificate.0.chain",
            WWW.key,
            "certificate[0].chain: block 1 is a PRIVATE KEY, not a CERTIFICATE: the key goes in `key`",
        ),
        ("certificate.0.chain", "hello", "certificate[0].chain: holds text outside its PEM blocks"),
        (
            "certificate.0.chain",
            WWW.chain + "\x1b[31m",
            "certificate[0].chain: must not contain control characters",
        ),
        ("certificate.0.key", WWW.leaf, "certificate[0].key: must be one PEM private key"),
        ("certificate.1.name", "www", "certificate: www is listed twice"),
        (
            "virtual_service.0.certificate",
            ["nope"],
            "virtual_service[0].certificate[0]: no certificate 'nope' (there are: api, lab-ca, www)",
        ),
        (
            "virtual_service.0.certificate",
            ["lab-ca"],
            "virtual_service[0].certificate[0]: 'lab-ca' has no key: it can only verify real servers",
        ),
        (
            "virtual_service.0.certificate",
            [],
            "virtual_service[0].certificate: an https service needs a certificate",
        ),
        (
            "virtual_service.0.backend_ca",
            "lab-ca",
            "virtual_service[0].backend_ca: verifies TLS to the real servers: set backend_tls = true",
        ),
        (
            "virtual_service.0.type",
            "l4",
            "virtual_service[0].certificate: is for type https (this service is l4)",
        ),
    ],
)
def test_each_problem_names_its_key(path, value, want):
    found = problems(with_(path, value))
    assert found and found[0].startswith(want), found


def test_an_encrypted_key_is_refused_with_what_to_do():
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(WWW.key.encode(), None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    ).decode()
    assert problems(with_("certificate.0.key", encrypted)) == [
        "certificate[0].key: is encrypted: upload it without a passphrase"
    ]


def test_dates_are_judged_at_upload_not_when_a_stored_document_loads():
    old = CA.issue("old.example.test", days=2, start_days=-3)
    doc = with_("certificate.0", {"name": "www", "chain": old.chain, "key": old.key})
    assert problems(doc) == []  # stored earlier: it still loads (and warns elsewhere)
    info = certs.inspect(old.chain, old.key)
    assert certs.dated_problem(info, time.time()).startswith("expired on ")
    soon = CA.issue("new.example.test", start_days=2)
    assert certs.dated_problem(certs.inspect(soon.chain), time.time()).startswith(
        "not valid before"
    )
    assert certs.dated_problem(certs.inspect(WWW.chain, WWW.key), time.time()) is None


def test_a_document_without_certificates_hashes_as_before_they_existed():
    doc = copy.deepcopy(BASE)
    del doc["certificate"]
    doc["virtual_service"][0].update(type="http", port=80)
    del doc["virtual_service"][0]["certificate"]
    canonical = parse_document(doc).canonical().decode()
    for key in ("certificate", "tls_profile", "hsts", "redirect_http", "backend_tls", "backend_ca"):
        assert f'"{key}"' not in canonical


def test_stored_keys_are_shown_as_a_digest():
    shown = certs.stored_key(WWW.key)
    assert certs.is_stored(shown) and "BEGIN" not in shown and shown != certs.stored_key(API.key)


def test_status_warns_of_an_expired_and_an_expiring_certificate_naming_its_users():
    now = time.time()
    dates = [
        {"name": "old", "not_after": now - 60, "used_by": ["site"]},
        {"name": "soon", "not_after": now + 10 * 86400 + 60, "used_by": []},
        {"name": "fine", "not_after": now + 90 * 86400, "used_by": ["site"]},
    ]
    assert certs.warnings(dates, now) == [
        "certificate old (used by site) has expired: clients refuse it; renew it "
        "(carpool cert replace)",
        "certificate soon expires in 10 days: renew it (carpool cert replace)",
    ]
