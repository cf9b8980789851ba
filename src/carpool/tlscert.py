"""Self-signed TLS certificates: the WUI's first-start certificate and the lab servers' HTTPS.

An existing pair is never overwritten, so an admin's own certificate stays in place."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from . import files


def ensure_self_signed(
    cert: Path, key: Path, common_name: str, addresses: tuple[str, ...] = (), days: int = 825
) -> bool:
    """Write a self-signed certificate and its key unless both exist. True if written."""
    cert, key = Path(cert), Path(key)
    if cert.exists() and key.exists():
        return False
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    alt: list[x509.GeneralName] = [x509.DNSName(common_name)]
    alt += [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .sign(private, hashes.SHA256())
    )
    for directory in {cert.parent, key.parent}:
        files.private_dir(directory)
    key_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    files.write_private(key, key_pem)  # 0600
    files.write_private(cert, certificate.public_bytes(serialization.Encoding.PEM), mode=0o644)
    return True
