"""TLS certificates in the document (`[[certificate]]`): a PEM chain, leaf first, and the leaf's
private key — or, without a key, CA certificates that real servers are verified against.

Pure: PEM text in, facts or a `CertProblem` naming the field out; the clock is passed in. The
document checks what never changes (the PEM parses, the key is the leaf's, each certificate is
signed by the next); an upload also checks the dates (a stored document whose certificate
expires later must still load, and says so in status, doctor and /metrics instead).
"""

from __future__ import annotations

import datetime
import hashlib
import re
from dataclasses import asdict, dataclass
from typing import Any

MAX_CHAIN = 64 * 1024  # characters of PEM: a leaf and a few intermediates are ~2-8 KiB
MAX_KEY = 16 * 1024  # an RSA-8192 key is ~6.5 KiB of PEM
MAX_IN_CHAIN = 8
EXPIRY_WARNING_DAYS = 30  # status, WUI, doctor: a certificate this close to its end
_BLOCK = re.compile(
    r"-----BEGIN ([A-Z0-9 ]+)-----\r?\n[A-Za-z0-9+/=\r\n]*?-----END \1-----", re.ASCII
)
_KEY_LABELS = ("PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY")


class CertProblem(ValueError):
    def __init__(self, field: str, why: str):
        super().__init__(why)
        self.field, self.why = field, why


@dataclass(frozen=True)
class CertInfo:
    """What an operator reads about a certificate entry (never the key)."""

    subject: str
    issuer: str
    names: tuple[str, ...]  # subjectAltName DNS names and IP addresses
    not_before: float  # Unix time
    not_after: float  # the earliest end in the chain: an intermediate's end breaks it too
    fingerprint: str  # SHA-256 of the leaf (DER), hex
    key_type: str  # of the leaf's public key: "ECDSA P-256", "RSA 2048"
    chain_length: int
    has_key: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def days_left(self, now: float) -> float:
        return (self.not_after - now) / 86400


def _blocks(text: str, field: str) -> list[tuple[str, bytes]]:
    """(label, PEM bytes) of every PEM block; anything else but whitespace is refused."""
    found, rest = [], text
    for m in _BLOCK.finditer(text):
        found.append((m[1], m[0].encode("ascii")))
    rest = _BLOCK.sub("", text)
    if rest.strip():
        raise CertProblem(field, "holds text outside its PEM blocks (-----BEGIN ...-----)")
    return found


def _certificates(chain: str) -> list[Any]:
    from cryptography import x509

    if len(chain) > MAX_CHAIN:
        raise CertProblem("chain", f"longer than {MAX_CHAIN // 1024} KiB of PEM")
    blocks = _blocks(chain, "chain")
    if not blocks:
        raise CertProblem("chain", "no PEM certificate (-----BEGIN CERTIFICATE-----)")
    if len(blocks) > MAX_IN_CHAIN:
        raise CertProblem("chain", f"more than {MAX_IN_CHAIN} certificates")
    certs = []
    for n, (label, pem) in enumerate(blocks, 1):
        if label != "CERTIFICATE":
            hint = ": the key goes in `key`" if "PRIVATE KEY" in label else ""
            raise CertProblem("chain", f"block {n} is a {label}, not a CERTIFICATE{hint}")
        try:
            certs.append(x509.load_pem_x509_certificate(pem))
        except ValueError as e:
            raise CertProblem("chain", f"certificate {n} does not parse: {e}") from None
    return certs


def _signed_by(cert: Any, issuer: Any) -> bool:
    """cert's signature verifies with issuer's public key (RSA PKCS#1 v1.5, ECDSA)."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

    key = issuer.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(
                cert.signature,
                cert.tbs_certificate_bytes,
                padding.PKCS1v15(),
                cert.signature_hash_algorithm,
            )
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(
                cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm)
            )
        else:
            return bool(cert.issuer == issuer.subject)  # other key types: the names at least
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def _key_type(public: Any) -> str:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    if isinstance(public, rsa.RSAPublicKey):
        return f"RSA {public.key_size}"
    if isinstance(public, ec.EllipticCurvePublicKey):
        return {"secp256r1": "ECDSA P-256", "secp384r1": "ECDSA P-384"}.get(
            public.curve.name, f"ECDSA {public.curve.name}"
        )
    if isinstance(public, ed25519.Ed25519PublicKey):
        return "Ed25519"
    return type(public).__name__


def _check_key(key: str, leaf: Any) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if len(key) > MAX_KEY:
        raise CertProblem("key", f"longer than {MAX_KEY // 1024} KiB of PEM")
    blocks = _blocks(key, "key")
    if len(blocks) != 1 or blocks[0][0] not in (*_KEY_LABELS, "ENCRYPTED PRIVATE KEY"):
        raise CertProblem("key", "must be one PEM private key (-----BEGIN PRIVATE KEY-----)")
    if blocks[0][0] == "ENCRYPTED PRIVATE KEY" or b"Proc-Type: 4,ENCRYPTED" in blocks[0][1]:
        raise CertProblem("key", "is encrypted: upload it without a passphrase")
    try:
        private = serialization.load_pem_private_key(blocks[0][1], password=None)
    except (ValueError, TypeError) as e:
        raise CertProblem("key", f"does not parse: {e}") from None
    if isinstance(private, rsa.RSAPrivateKey) and private.key_size < 2048:
        raise CertProblem("key", f"RSA {private.key_size}: at least 2048 bits")
    if not isinstance(private, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise CertProblem("key", "must be an RSA or ECDSA key (what every TLS client takes)")
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if private.public_key().public_bytes(der, spki) != leaf.public_key().public_bytes(der, spki):
        raise CertProblem("key", "is not the key of the chain's first certificate (the leaf)")


def _names(cert: Any) -> tuple[str, ...]:
    from cryptography import x509

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    dns = san.get_values_for_type(x509.DNSName)
    ips = [str(a) for a in san.get_values_for_type(x509.IPAddress)]
    return tuple(dns + ips)


def _time(value: datetime.datetime) -> float:
    return value.replace(tzinfo=datetime.UTC).timestamp()


def inspect(chain: str, key: str = "") -> CertInfo:
    """Check an entry (the PEM parses, each certificate is signed by the next, the key is the
    leaf's) and describe it. CertProblem names `chain` or `key`."""
    from cryptography.hazmat.primitives import serialization

    certs = _certificates(chain)
    leaf = certs[0]
    if key:
        for n, (cert, issuer) in enumerate(zip(certs, certs[1:], strict=False), 1):
            if not _signed_by(cert, issuer):
                raise CertProblem(
                    "chain",
                    f"certificate {n + 1} did not sign certificate {n}: the chain goes leaf "
                    "first, then each issuer",
                )
        _check_key(key, leaf)
    fingerprint = hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest()
    return CertInfo(
        subject=leaf.subject.rfc4514_string(),
        issuer=leaf.issuer.rfc4514_string(),
        names=_names(leaf),
        not_before=_time(leaf.not_valid_before),
        not_after=min(_time(c.not_valid_after) for c in certs),
        fingerprint=fingerprint,
        key_type=_key_type(leaf.public_key()),
        chain_length=len(certs),
        has_key=bool(key),
    )


def dated_problem(info: CertInfo, now: float) -> str | None:
    """Why an upload at `now` is refused on its dates, or None."""
    if now >= info.not_after:
        when = datetime.datetime.fromtimestamp(info.not_after, datetime.UTC)
        return f"expired on {when:%Y-%m-%d %H:%M} UTC"
    if now < info.not_before:
        when = datetime.datetime.fromtimestamp(info.not_before, datetime.UTC)
        return f"not valid before {when:%Y-%m-%d %H:%M} UTC"
    return None


STORED = "(stored)"


def stored_key(key: str) -> str:
    """What views show in place of a stored key: that there is one, and a digest to tell two
    apart. A document sent back with it keeps the stored key (see `is_stored`)."""
    return f"{STORED} sha256:{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def is_stored(value: object) -> bool:
    return isinstance(value, str) and value.startswith(STORED)


def rows(doc: Any, now: float) -> list[dict[str, Any]]:
    """Each certificate of a Document as the API, WUI, CLI and status show it: its facts, days
    left, what uses it, whether a key is stored (never the key)."""
    used = doc.certificates_used()
    out = []
    for cert in doc.certificate:
        info = cert.info()
        days = info.days_left(now)
        out.append(
            {
                "name": cert.name,
                **info.as_dict(),
                "days_left": round(days, 1),
                "state": state(days),
                "key": stored_key(cert.key) if cert.key else None,
                "used_by": used.get(cert.name, []),
            }
        )
    return out


def state(days_left: float) -> str:
    if days_left <= 0:
        return "expired"
    return "expiring" if days_left <= EXPIRY_WARNING_DAYS else "ok"


def warnings(dates: list[dict[str, Any]], now: float) -> list[str]:
    """Status lines for certificates (status["certificates"]: name, not_after, used_by) that
    ran out or run out within EXPIRY_WARNING_DAYS."""
    out = []
    for cert in dates:
        days = (cert["not_after"] - now) / 86400
        users = f" (used by {', '.join(cert['used_by'])})" if cert["used_by"] else ""
        if days <= 0:
            out.append(
                f"certificate {cert['name']}{users} has expired: clients refuse it; renew it "
                "(carpool cert replace)"
            )
        elif days <= EXPIRY_WARNING_DAYS:
            out.append(
                f"certificate {cert['name']}{users} expires in {days:.0f} days: renew it "
                "(carpool cert replace)"
            )
    return out
