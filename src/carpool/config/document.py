"""The appliance's configuration document: one for the pair, the same on both units.

Pydantic models (TOML on disk, JSON on the wire). Everything here is synced; what belongs to one
machine only (role, partner secret, directories) is the local `[unit]` table (config/ha.py).
A document has a content hash (SHA-256 of its canonical JSON); the version number is the store's.
Validation errors are Problems (a place and why), shown as `KEY: why` lines, e.g.
`virtual_service[0].port: must be 1-65535`.
"""

from __future__ import annotations

import base64
import binascii
import collections
import dataclasses
import hashlib
import ipaddress
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Protocol, Self, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
    model_validator,
)
from pydantic_core import ErrorDetails

from . import certs

ROLES = ("first", "second")
# Tables and lists within each other, the document being level 1: a real document needs 5
# (virtual_service, a service, real_server, a server); a deeper one is refused before anything
# walks it recursively.
MAX_DEPTH = 16


Loc = tuple[str | int, ...]


def key_of(loc: Loc) -> str:
    """`virtual_service[0].check.type` for ("virtual_service", 0, "check", "type")."""
    return "".join(
        f"[{p}]" if isinstance(p, int) else f"{'.' if n else ''}{p}" for n, p in enumerate(loc)
    )


@dataclass(frozen=True)
class Problem:
    """One reason a document is invalid: where (keys and list indexes) and why. Callers use
    `loc` to place it (a form field, an API error's loc); str() is the `KEY: why` line."""

    loc: Loc
    why: str

    @property
    def key(self) -> str:
        return key_of(self.loc)

    def __str__(self) -> str:
        return f"{self.key}: {self.why}" if self.loc else self.why


class DocumentError(ValueError):
    """The document is invalid; `problems` are every Problem found."""

    def __init__(self, problems: list[Problem]):
        super().__init__("\n".join(map(str, problems)))
        self.problems = problems


class _Problems(ValueError):
    """Raised inside a validator with problems elsewhere in the document: pydantic keeps the
    exception in its error, so each keeps its own place (no text to split later)."""

    def __init__(self, problems: list[Problem]):
        super().__init__("; ".join(map(str, problems)))
        self.problems = problems


# C0 and C1 controls and DEL (CR/LF end a header or a config line, ESC drives a terminal), the
# Unicode line and paragraph separators, and the bidi marks, embeddings, overrides and
# isolates (text shown other than it reads). Nothing else is refused: any printable text stays.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")


def _shown(value: object, most: int = 40) -> str:
    """repr() for a message (control characters escaped), cut short."""
    text = repr(value)
    return text if len(text) <= most else f"{text[: most - 4]}...{text[-1]}"


def unprintable(value: str) -> str:
    """Why `value` may not reach a protocol, a file or a terminal (its first control
    character), else "". The rule of Text, for the store's records too."""
    found = _CONTROL.search(value)
    if found is None:
        return ""
    return (
        f"must not contain control characters "
        f"(U+{ord(found.group()):04X} at position {found.start()})"
    )


def _text(value: str) -> str:
    why = unprintable(value)
    if why:
        raise ValueError(why)
    return value


# Every string of the document is Text (directly or through a type below): a document comes
# from the partner, an editor or a file, and its strings reach protocols, files and terminals.
Text = Annotated[str, AfterValidator(_text)]


def _pem_text(value: str) -> str:
    """Text with line breaks: PEM (each line is checked again by config/certs.py)."""
    why = unprintable(value.replace("\r\n", "").replace("\n", ""))
    if why:
        raise ValueError(why)
    return value


PemText = Annotated[str, AfterValidator(_pem_text)]


_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
# The canonical dotted quad (what str(IPv4Address) gives): most addresses are, and one regex
# match is a tenth of ipaddress's parse (10,000 services carry 20,000 addresses).
_DOTTED = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")


def _ipv4(value: str) -> str:
    if _DOTTED.fullmatch(value):
        return value
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise ValueError(f"not an IPv4 address: {_shown(value)}") from None


def _cidr(value: str) -> str:
    if "/" not in value:
        raise ValueError(f"{_shown(value)} needs a prefix length, e.g. {value[:15]}/24")
    try:
        return str(ipaddress.IPv4Interface(value))
    except ValueError:
        raise ValueError(f"not an IPv4 address with prefix: {_shown(value)}") from None


# Bytes the kernel refuses in an interface name (net/core/dev.c dev_valid_name): '/', ':' and
# what its isspace() takes, which is ASCII whitespace and 0xA0 (a byte of "à" in UTF-8, too).
_IFNAME_BYTES = frozenset(b"/: \t\n\v\f\r\xa0")


def _ifname(value: str) -> str:
    """As the kernel takes it: 1-15 bytes (IFNAMSIZ less the NUL), not "." or "..", no '/',
    ':' or whitespace (and, as Text, no control character). It reaches netlink, nft,
    conntrackd.conf and /proc/sys paths."""
    raw, why = value.encode(), ""
    if not 1 <= len(raw) <= 15:
        why = "must be 1-15 bytes"
    elif value in (".", ".."):
        why = "must not be '.' or '..'"
    elif _IFNAME_BYTES.intersection(raw) or any(c.isspace() for c in value):
        why = "must not contain '/', ':' or whitespace"
    if why:
        raise ValueError(f"not a valid interface name: {_shown(value)} ({why})")
    return value


_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")


def _host(value: str) -> str:
    """Empty, or a host name (labels of letters, digits, `-` and `_`, 1-63 each, 253 in all) or an
    IPv4 address: the Host header and the TLS server name of an http(s) check."""
    if value and (len(value) > 253 or not all(map(_LABEL.fullmatch, value.split(".")))):
        raise ValueError(
            f"not a host name or an IPv4 address: {_shown(value)} (ASCII letters, digits, "
            f"'-' and '_' in labels of 1-63 characters, 253 in all; no port)"
        )
    return value


_PATH = re.compile(r"/[\x21-\x7e]{0,1023}")


def _path(value: str) -> str:
    """One HTTP request target: a `/`, then visible ASCII (percent-encode the rest)."""
    if not _PATH.fullmatch(value):
        raise ValueError(
            f"must be a path starting with '/', of visible ASCII without spaces (percent-"
            f"encode the rest), at most 1024 characters, not {_shown(value)}"
        )
    return value


# What a password hash may cost (argon2id, RFC 9106): its parameters come with the document, and
# every login attempt (unknown users included) pays them. carpool writes m=64 MiB, t=3, p=4
# (argon2-cffi's defaults, web/auth.py; RFC 9106's second choice); OWASP's smallest is m=19 MiB,
# t=2, p=1. RFC 9106's first choice, m=2 GiB, is refused: no appliance login may cost that.
ARGON2_MEMORY_KIB = (8 * 1024, 256 * 1024)
ARGON2_PASSES = (1, 10)
ARGON2_LANES = (1, 8)
ARGON2_SALT_BYTES = (8, 64)
ARGON2_HASH_BYTES = (16, 64)
_NUMBER = r"(0|[1-9][0-9]{0,9})"
_PHC = re.compile(
    rf"\$argon2id\$v=19\$m={_NUMBER},t={_NUMBER},p={_NUMBER}\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)"
)


def _argon2(value: str) -> str:
    """A PHC string as carpool writes it: `$argon2id$v=19$m=KiB,t=passes,p=lanes$SALT$HASH`
    (base64 without padding), its costs within the bounds above."""
    phc = _PHC.fullmatch(value) if len(value) <= 256 else None
    if not phc:
        raise ValueError(
            "not an argon2id hash ($argon2id$v=19$m=KIB,t=PASSES,p=LANES$SALT$HASH, as "
            f"`carpool passwd` makes), not {_shown(value)}"
        )
    costs = zip(
        ("memory cost m (KiB)", "passes t", "lanes p"),
        map(int, phc.group(1, 2, 3)),
        (ARGON2_MEMORY_KIB, ARGON2_PASSES, ARGON2_LANES),
        strict=True,
    )
    for what, number, (low, high) in costs:
        if not low <= number <= high:
            raise ValueError(
                f"argon2 {what} must be {low}-{high} (every login attempt pays it), not {number}"
            )
    for what, coded, (low, high) in (
        ("salt", phc[4], ARGON2_SALT_BYTES),
        ("hash", phc[5], ARGON2_HASH_BYTES),
    ):
        try:
            size = len(base64.b64decode(coded + "=" * (-len(coded) % 4), validate=True))
        except binascii.Error:
            raise ValueError(f"the argon2 {what} is not base64: {_shown(coded)}") from None
        if not low <= size <= high:
            raise ValueError(f"the argon2 {what} must be {low}-{high} bytes, not {size}")
    return value


def _not_unicast(address: str) -> str:
    """Why `address` (canonical, as _ipv4 leaves it) is no one host's, else "". From its first
    octet: one int() per address, as many as there are real servers."""
    first = int(address[: address.index(".")])
    if 224 <= first <= 239:
        return "multicast"
    if first == 0:
        return "unspecified: 0.0.0.0/8 is 'this network'"
    if address == "255.255.255.255":
        return "the limited broadcast"
    if first >= 240:
        return "reserved: 240.0.0.0/4"
    return ""


def _unicast(value: str) -> str:
    """A server or a ping target: some host's address (a loopback one too)."""
    why = _not_unicast(value) if value else ""
    if why:
        raise ValueError(f"{value} is not a unicast address ({why})")
    return value


def _ip(value: str) -> str:
    """An IPv4 or an IPv6 address, canonical (IPv6 compressed, lower case)."""
    if ":" not in value:
        return _ipv4(value)
    try:
        return str(ipaddress.IPv6Address(value))
    except ValueError:
        raise ValueError(f"not an IPv4 or IPv6 address: {_shown(value)}") from None


def _unicast_any(value: str) -> str:
    """_unicast for either family (an IPv6 link-local one needs a scope no key carries)."""
    if ":" not in value:
        return _unicast(value)
    address = ipaddress.IPv6Address(value)
    why = "" if address.is_loopback else _not_unicast6(address)
    if why:
        raise ValueError(f"{value} is not a unicast address ({why})")
    return value


def _unit_address(value: str) -> str:
    """A unit's own address: unicast, not loopback (link-local is fine: a heartbeat cable)."""
    why = _not_unicast(value) or ("loopback" if value.startswith("127.") else "")
    if why:
        raise ValueError(f"{value} is not a unit's address ({why})")
    return value


_WIDEST_SHARED = 8
_WIDEST_SHARED6 = 48


def _not_unicast6(address: ipaddress.IPv6Address) -> str:
    if address.is_multicast:
        return "multicast"
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.ipv4_mapped is not None:
        return "IPv4-mapped: write the IPv4 address itself"
    if address.is_link_local:
        return "link-local: fe80::/10 is each link's own (carpool uses it where a protocol asks)"
    return ""


def _unit_address6(value: str) -> str:
    try:
        address = ipaddress.IPv6Address(value)
    except ValueError:
        raise ValueError(f"not an IPv4 or IPv6 address: {_shown(value)}") from None
    why = _not_unicast6(address)
    if why:
        raise ValueError(f"{address} is not a unit's address ({why})")
    return str(address)


def _unit_addresses(value: object) -> str | tuple[str, ...]:
    """A unit's address on one interface: one address, or a list of one IPv4 and one IPv6
    address (a dual-stack link). Written back as given (a string stays a string)."""
    if isinstance(value, str):
        return _one_address(value)
    if not isinstance(value, tuple) or not 1 <= len(value) <= 2:
        raise ValueError(
            "expected an address, or a list of one IPv4 and one IPv6 address, not "
            + (f"{len(value)} addresses" if isinstance(value, tuple) else type(value).__name__)
        )
    out = tuple(_one_address(v) for v in value)
    if len({":" in a for a in out}) != len(out):
        raise ValueError(f"one address per family, not {', '.join(out)}")
    return out


def _one_address(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected an address (a string), got {type(value).__name__}")
    _text(value)
    return _unit_address(_ipv4(value)) if ":" not in value else _unit_address6(value)


def addresses_of(
    value: str | tuple[str, ...],
) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]:
    """A unit's addresses on an interface (`first` or `second` as the document holds it)."""
    return tuple(map(ipaddress.ip_address, (value,) if isinstance(value, str) else value))


def _shared6(value: str) -> str:
    try:
        iface = ipaddress.IPv6Interface(value)
    except ValueError:
        raise ValueError(f"not an IPv6 address with prefix: {_shown(value)}") from None
    address, net = iface.ip, iface.network
    why = _not_unicast6(address)
    if why:
        raise ValueError(f"{address} cannot be shared ({why})")
    if net.prefixlen < _WIDEST_SHARED6:
        raise ValueError(
            f"{value}: a prefix shorter than /{_WIDEST_SHARED6} routes {net} to the interface"
        )
    if net.prefixlen < 127 and address == net.network_address:
        raise ValueError(f"{address} is the Subnet-Router anycast address of {net}")
    return str(iface)


def _shared(value: str) -> str:
    """A shared address with its prefix: a unicast host address of the subnet, not its network
    or broadcast address (IPv6: not the Subnet-Router anycast one), not loopback or link-local,
    the prefix /8 or longer (IPv6: /48; the kernel routes the whole prefix to the interface
    that holds the address)."""
    if ":" in value:
        if "/" not in value:
            raise ValueError(f"{_shown(value)} needs a prefix length, e.g. {value[:39]}/64")
        return _shared6(value)
    value = _cidr(value)
    iface = ipaddress.IPv4Interface(value)
    address, net = iface.ip, iface.network
    why = _not_unicast(str(address))
    if not why and address.is_loopback:
        why = "loopback"
    if not why and address.is_link_local:
        why = "link-local: 169.254.0.0/16 is no one's to share"
    if why:
        raise ValueError(f"{address} cannot be shared ({why})")
    if net.prefixlen < _WIDEST_SHARED:
        raise ValueError(
            f"{value}: a prefix shorter than /{_WIDEST_SHARED} routes {net} to the interface"
        )
    if net.prefixlen < 31 and address in (net.network_address, net.broadcast_address):
        kind = "network" if address == net.network_address else "broadcast"
        raise ValueError(f"{address} is the {kind} address of {net}")
    return value


IP = Annotated[Text, AfterValidator(_ip)]  # either family
UnicastIP = Annotated[IP, AfterValidator(_unicast_any)]
OptionalUnicastIP = Annotated[Text, AfterValidator(lambda v: _unicast_any(_ip(v)) if v else v)]
SharedCidr = Annotated[Text, AfterValidator(_shared)]  # IPv4 or IPv6, with its prefix
UnitAddresses = Annotated[
    str | tuple[str, ...],
    PlainValidator(_unit_addresses),
    PlainSerializer(lambda v: v if isinstance(v, str) else list(v)),
]
IfName = Annotated[Text, AfterValidator(_ifname)]
Host = Annotated[Text, AfterValidator(_host)]
UrlPath = Annotated[Text, AfterValidator(_path)]
PasswordHash = Annotated[Text, AfterValidator(_argon2)]
Port = Annotated[int, Field(ge=1, le=65535)]


class _Model(BaseModel):
    # strict: a TOML boolean is no number, "80" is no port; unknown keys are errors.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# The fast detector when ha.liveness_ms / liveness_multiplier are unset: a verdict on a silent
# partner 0.5 s after its last hello (and 25 ms for the queries), within 0.15 of keepalived's
# 3.5 s master-down at advert_int 1 even when no carrier drops; 4 hellos a second keep the
# active unit's idle cost near a third of what 10 cost (BENCHMARKS.md, tenth session)
LIVENESS_AUTO = (250, 2)

# Defaults of an earlier release that this one changed: a partner of that release sends them
# (it sends every key) and leaves them out of the hash, where they now mean "unset"
EARLIER_DEFAULTS: dict[tuple[str, str], object] = {
    ("ha", "liveness_ms"): 100,
    ("ha", "liveness_multiplier"): 3,
}

# Keys added after the first release, with the value a document without them means: left out of
# the canonical form (the hash) while they hold it, so a document hashes the same on every
# release — a version stored before an upgrade stays intact after it, and the units of a pair
# mid-upgrade agree on what a document is. A new key with a default goes here.
ADDED_LATER: dict[tuple[str, str], object] = {
    ("ha", "auth"): "carpool",
    # unset = automatic (LIVENESS_AUTO). The release before had 100 and 3 as defaults, which
    # its stored versions leave out (to_plain): a document without them now means automatic
    ("ha", "liveness_ms"): None,
    ("ha", "liveness_multiplier"): None,
    ("ha", "handover_drain"): 10,
}
# The same for lists of tables added later ([] left out) and keys added to each virtual service.
ADDED_LATER_LISTS = ("certificate",)
ADDED_LATER_VS: dict[str, object] = {
    "certificate": [],
    "tls_profile": "intermediate",
    "hsts": 0,
    "redirect_http": False,
    "backend_tls": False,
    "backend_ca": "",
    "pool": [],
    "rule": [],
    "min_up": 0,
    "drain_timeout": 0,
}
NAME_PATTERN = r"^[A-Za-z0-9_.-]+$"


class Appliance(_Model):
    description: Text = Field("", max_length=4096)


class Ha(_Model):
    protocol: Literal["carp", "vrrp3"] = "carp"
    # carpool: every advert field under the MAC, replays refused (carpool units only);
    # carp: BSD CARP / ucarp's HMAC (advskew, advbase, demote and replays not covered)
    auth: Literal["carpool", "carp"] = "carpool"
    vhid: int = Field(1, ge=1, le=255)
    ha_timeout: Literal[3, 6, 9, 12, 15] = 3
    fast: bool = False
    fast_interval_ms: int = Field(20, ge=10, le=990)
    preferred: Literal["none", "first", "second"] = "none"
    initial_wait: float = Field(0.0, ge=0, le=180)
    transport: Literal["multicast", "unicast", "broadcast"] = "multicast"
    vmac: bool = False
    garp_count: int = Field(3, ge=1, le=10)
    advskew: int = Field(0, ge=0, le=254)
    priority: int = Field(100, ge=1, le=254)
    state_sync: bool = True  # conntrackd over the heartbeat link: L4 flows survive
    # the fast detector on the heartbeat link (ha/liveness.py): hellos every liveness_ms from
    # the active unit; liveness_multiplier of them missed (or no carrier) and no answer on
    # another path: the standby takes over. 0 = off (the advert timer alone); unset =
    # automatic, LIVENESS_AUTO
    liveness_ms: int | None = Field(None, ge=0, le=1000)
    liveness_multiplier: int | None = Field(None, ge=2, le=10)
    # s after a planned failover during which the old unit finishes its HTTP connections
    # (dataplane/handover.py); 0 = off
    handover_drain: int = Field(10, ge=0, le=300)

    @model_validator(mode="after")
    def _centiseconds(self) -> Self:
        if self.fast_interval_ms % 10:
            raise ValueError(
                f"fast_interval_ms must be a multiple of 10 (VRRPv3 counts "
                f"centiseconds), not {self.fast_interval_ms}"
            )
        if self.fast and self.protocol == "carp" and self.auth == "carp":
            raise ValueError(
                'fast needs auth = "carpool" (CARP as ucarp speaks it counts whole seconds) '
                'or protocol = "vrrp3" (unauthenticated, for keepalived)'
            )
        if self.liveness_ms is not None and 0 < self.liveness_ms < 10:
            raise ValueError(
                f"liveness_ms is 0 (off) or 10 to 1000, not {self.liveness_ms} (a hello "
                f"every few ms would cost more CPU than it saves time)"
            )
        return self


class Interface(_Model):
    name: IfName
    first: UnitAddresses
    second: UnitAddresses
    check: bool = True
    heartbeat: bool = False
    shared: tuple[SharedCidr, ...] = ()
    ping_target: OptionalUnicastIP = ""  # ICMP or ICMPv6 echo
    ping_interval: float = Field(1.0, ge=0.2, le=60)

    def addresses(self, role: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]:
        return addresses_of(self.first if role == "first" else self.second)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        first, second = self.addresses("first"), self.addresses("second")
        if set(first) & set(second):
            raise ValueError("the two units need different addresses (first == second)")
        if self.heartbeat and self.shared:
            raise ValueError("the heartbeat interface carries no shared addresses")
        families = [sorted({a.version for a in own}) for own in (first, second)]
        problems = []
        if families[0] != families[1]:
            problems.append(
                Problem(
                    ("second",),
                    f"the units need addresses of the same families on {self.name} "
                    f"(first: {', '.join(f'IPv{v}' for v in families[0])}; "
                    f"second: {', '.join(f'IPv{v}' for v in families[1])})",
                )
            )
        for n, cidr in enumerate(self.shared):
            shared = ipaddress.ip_interface(cidr)
            units = [a for a in first + second if a.version == shared.version]
            if shared.ip in units:
                problems.append(Problem(("shared", n), f"{cidr} is a unit's own address"))
            elif len(units) < 2:
                problems.append(
                    Problem(
                        ("shared", n),
                        f"{cidr}: both units need an IPv{shared.version} address on {self.name} "
                        "(first and second list one address of each family)",
                    )
                )
            elif not all(unit in shared.network for unit in units):
                problems.append(
                    Problem(
                        ("shared", n),
                        f"{cidr} is outside the subnet of the units' addresses on {self.name} "
                        f"({', '.join(map(str, units))} not both in {shared.network})",
                    )
                )
        if problems:
            raise _Problems(problems)
        return self


class UnitSettings(_Model):
    name: Text = Field("", max_length=63)


class Units(_Model):
    first: UnitSettings = UnitSettings()
    second: UnitSettings = UnitSettings()


class Sync(_Model):
    port: Port = 6973
    interval: float = Field(5.0, ge=0.5, le=3600)  # s between (version, hash) re-checks
    history: int = Field(50, ge=2, le=10000)  # versions kept


class RealServer(_Model):
    address: UnicastIP
    port: Port
    weight: int = Field(1, ge=0, le=256)
    enabled: bool = True
    max_connections: int = Field(0, ge=0, le=1_000_000)  # http/https: at once (0: no limit)
    slow_start: int = Field(0, ge=0, le=3600)  # http/https: s to ramp up after coming back

    @model_serializer(mode="wrap")
    def _later_unwritten(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # keys added later, at their defaults, are left out: every stored document keeps its hash
        data: dict[str, Any] = handler(self)
        for key in ("max_connections", "slow_start"):
            if not data.get(key):
                data.pop(key, None)
        return data


class HealthCheck(_Model):
    type: Literal["tcp", "http", "https", "icmp", "none"] = "tcp"
    path: UrlPath = "/"  # http(s)
    status: int = Field(200, ge=100, le=599)  # http(s): expected status
    host: Host = ""  # http(s): Host header and SNI ("" = the address)
    verify: bool = False  # https: verify the server's certificate (real servers' are
    # mostly self-signed, so off by default, as in HAProxy)
    interval: float = Field(2.0, ge=0.1, le=3600)
    timeout: float = Field(1.0, ge=0.05, le=60)
    rise: int = Field(2, ge=1, le=100)  # successes before a server comes back
    fall: int = Field(2, ge=1, le=100)  # failures before a server leaves the pool


class Certificate(_Model):
    """A TLS certificate for https services: its PEM chain (leaf first) and private key; or,
    without a key, CA certificates that real servers are verified against (`backend_ca`)."""

    name: Text = Field(min_length=1, max_length=64, pattern=NAME_PATTERN)
    chain: PemText = Field(min_length=1, max_length=certs.MAX_CHAIN)
    key: PemText = Field(
        "", max_length=certs.MAX_KEY, repr=False
    )  # never shown once stored (config views)

    @model_validator(mode="after")
    def _pem(self) -> Self:
        try:
            certs.inspect(self.chain, self.key)
        except certs.CertProblem as e:
            raise _Problems([Problem((e.field,), e.why)]) from None
        return self

    def info(self) -> certs.CertInfo:
        """The chain's facts (the key was checked when the document was; not again here)."""
        return dataclasses.replace(certs.inspect(self.chain), has_key=bool(self.key))


# Content rules (http/https). Every value a rule gives HAProxy is written single-quoted (no
# escapes, no variables inside), so a quote is the one character refused there.
# an RFC 9110 token, less what HAProxy reads specially in an unquoted word (# $ and the like)
_HEADER_NAME = re.compile(r"[0-9A-Za-z_.-]{1,64}")
RULE_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _unquoted(value: str) -> str:
    if "'" in value:
        raise ValueError(f"must not contain a single quote: {_shown(value)}")
    return value


def _regex(value: str) -> str:
    _unquoted(value)
    if len(value) > 256:
        raise ValueError("at most 256 characters")
    try:
        re.compile(value)
    except re.error as e:
        raise ValueError(f"not a regular expression: {e}") from None
    return value


def _header_name(value: str) -> str:
    if not _HEADER_NAME.fullmatch(value):
        raise ValueError(f"not a header name: {_shown(value)} (letters, digits, - _ and .)")
    return value


def _header_line(value: str) -> str:
    """`Name: value` of a header a rule sets."""
    name, colon, text = value.partition(":")
    if not colon:
        raise ValueError(f"write NAME: VALUE, not {_shown(value)}")
    _header_name(name.strip())
    _unquoted(text)
    if len(text) > 1024:
        raise ValueError("a header value of at most 1024 characters")
    return value


RulePath = Annotated[UrlPath, AfterValidator(_unquoted)]
Regex = Annotated[Text, AfterValidator(_regex)]
HeaderName = Annotated[Text, AfterValidator(_header_name)]
OptionalHeaderName = Annotated[Text, AfterValidator(lambda v: v and _header_name(v))]
HeaderLine = Annotated[Text, AfterValidator(_header_line)]
Quoteless = Annotated[Text, AfterValidator(_unquoted)]


class Pool(_Model):
    """A named group of real servers content rules send requests to, with its own scheduler,
    persistence and health check."""

    name: Text = Field(min_length=1, max_length=64, pattern=NAME_PATTERN)
    scheduler: Literal["rr", "wrr", "lc", "sh", "fixed"] = "rr"
    persistence: int = Field(0, ge=0, le=86400)
    cookie: bool = False
    check: HealthCheck = HealthCheck()
    real_server: tuple[RealServer, ...] = ()

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.scheduler == "fixed" and (self.persistence or self.cookie):
            key = "persistence" if self.persistence else "cookie"
            raise _Problems([Problem((key,), _FIXED_STICKS)])
        return self


_FIXED_STICKS = (
    "scheduler fixed keeps no persistence: a client kept on the second server would stay "
    "there after the first came back"
)


class Rule(_Model):
    """Matched in order, the first that matches wins: its conditions all hold (none: every
    request); it sends the request to `pool` or answers with `redirect`, and edits headers."""

    host: tuple[Host, ...] = Field((), max_length=64)  # any of these (no port; any case)
    path_prefix: tuple[RulePath, ...] = Field((), max_length=64)  # any of these
    path_regex: Regex = ""
    method: tuple[Literal[RULE_METHODS], ...] = ()  # type: ignore[valid-type]
    header: OptionalHeaderName = ""  # present (with header_value: containing it)
    header_value: Quoteless = Field("", max_length=1024)
    pool: Text = ""  # "": the service's own real servers
    redirect: Quoteless = Field("", max_length=2048)  # a URL or path: answered, not proxied
    redirect_code: Literal[301, 302, 303, 307, 308] = 302
    set_request_header: tuple[HeaderLine, ...] = Field((), max_length=32)
    delete_request_header: tuple[HeaderName, ...] = Field((), max_length=32)
    set_response_header: tuple[HeaderLine, ...] = Field((), max_length=32)
    delete_response_header: tuple[HeaderName, ...] = Field((), max_length=32)

    @model_validator(mode="after")
    def _one_action(self) -> Self:
        if self.pool and self.redirect:
            raise _Problems(
                [Problem(("redirect",), "a rule redirects or sends to a pool, not both")]
            )
        if self.header_value and not self.header:
            raise _Problems([Problem(("header_value",), "needs header (the name)")])
        if self.redirect and not (self.redirect.startswith(("/", "https://", "http://"))):
            raise _Problems([Problem(("redirect",), "a path (/...) or an http(s):// URL")])
        if any(c.isspace() for c in self.redirect):
            raise _Problems([Problem(("redirect",), "no spaces (percent-encode them)")])
        return self


# https: Mozilla's server-side TLS profiles (https://wiki.mozilla.org/Security/Server_Side_TLS)
TlsProfile = Literal["intermediate", "modern"]
HSTS_MAX = 2 * 365 * 86400


class VirtualService(_Model):
    name: Text = Field(min_length=1, max_length=64, pattern=NAME_PATTERN)
    address: IP  # a shared address, either family
    port: Port
    protocol: Literal["tcp", "udp"] = "tcp"
    type: Literal["l4", "http", "https"] = "l4"
    # fixed: ordered fail-over, the first healthy server (in the listed order) takes everything
    scheduler: Literal["rr", "wrr", "lc", "sh", "fixed"] = "rr"
    persistence: int = Field(0, ge=0, le=86400)  # s of source-IP persistence; 0 = none
    cookie: bool = False  # http: cookie persistence
    x_forwarded_for: bool = True  # http
    when_down: Literal["reject", "sorry"] = "reject"
    sorry_server: OptionalUnicastIP = ""
    snat: bool = False  # l4: source-NAT to the shared address on the servers' side
    min_up: int = Field(0, ge=0, le=256)  # fewer healthy servers: the service is down (sorry)
    # s a draining server's (weight 0, disabled) connections may take to finish; 0 = no limit
    drain_timeout: int = Field(0, ge=0, le=86400)
    # https: certificate names ([[certificate]]), the first the default for clients without
    # SNI or naming no other; TLS versions and ciphers; Strict-Transport-Security max-age (s)
    certificate: tuple[Text, ...] = Field((), max_length=64)
    tls_profile: TlsProfile = "intermediate"
    hsts: int = Field(0, ge=0, le=HSTS_MAX)
    redirect_http: bool = False  # https: port 80 of the same address answers 301 to https
    backend_tls: bool = False  # http/https: TLS to the real servers too
    backend_ca: Text = ""  # verify the real servers against this [[certificate]] ("": no)
    check: HealthCheck = HealthCheck()
    real_server: tuple[RealServer, ...] = ()
    # http/https content switching: named pools, and ordered rules that pick one (or redirect)
    pool: tuple[Pool, ...] = Field((), max_length=64)
    rule: tuple[Rule, ...] = Field((), max_length=256)

    def groups(self) -> list[tuple[str, VirtualService | Pool]]:
        """(key, group) of each group of real servers with its own scheduler, persistence and
        check: the service itself (key = its name), then each pool ("service:pool"). The key
        names its health state and its HAProxy backend (be_KEY)."""
        return [(self.name, self), *((f"{self.name}:{p.name}", p) for p in self.pool)]

    @property
    def proxied(self) -> bool:
        """Served by HAProxy (http, https) rather than forwarded by nftables (l4)."""
        return self.type != "l4"

    def _later_keys(self) -> list[Problem]:
        """Problems of the keys added with https, content rules and server controls."""
        out = [
            Problem((key,), f"is for type https (this service is {self.type})")
            for key, unset in (
                ("certificate", not self.certificate),
                ("hsts", not self.hsts),
                ("redirect_http", not self.redirect_http),
                ("tls_profile", self.tls_profile == "intermediate"),
            )
            if self.type != "https" and not unset
        ]
        if self.type == "https" and not self.certificate:
            out.append(Problem(("certificate",), "an https service needs a certificate"))
        if not self.proxied and (self.backend_tls or self.backend_ca):
            out.append(Problem(("backend_tls",), "is for type http or https (not l4)"))
        if self.redirect_http and self.port != 443:
            out.append(
                Problem(
                    ("redirect_http",),
                    f"sends port 80 to https on port 443; this service is on {self.port}",
                )
            )
        if self.scheduler == "fixed" and (self.persistence or self.cookie):
            out.append(Problem(("persistence" if self.persistence else "cookie",), _FIXED_STICKS))
        if self.min_up > len(self.real_server):
            out.append(
                Problem(
                    ("min_up",),
                    f"{self.min_up} healthy servers needed but the service has "
                    f"{len(self.real_server)}: it would always be down",
                )
            )
        if self.min_up and self.scheduler == "fixed":
            out.append(
                Problem(("min_up",), "is for rr, wrr, lc and sh (fixed sends all to one server)")
            )
        if not self.proxied:
            out += [
                Problem(("real_server", n, key), "is for type http or https (not l4)")
                for n, rs in enumerate(self.real_server)
                for key in ("max_connections", "slow_start")
                if getattr(rs, key)
            ]
        if not self.proxied and (self.pool or self.rule):
            key = "rule" if self.rule else "pool"
            out.append(Problem((key,), "content rules are for type http or https (not l4)"))
        names = {p.name for p in self.pool}
        out += [
            Problem(("pool",), f"{n} is listed twice")
            for n in sorted(_repeated(p.name for p in self.pool))
        ]
        out += [
            Problem(
                ("rule", k, "pool"),
                f"no pool {r.pool!r} (there are: {_some(sorted(names))})",
            )
            for k, r in enumerate(self.rule)
            if r.pool and r.pool not in names
        ]
        if self.backend_ca and not self.backend_tls:
            out.append(
                Problem(("backend_ca",), "verifies TLS to the real servers: set backend_tls = true")
            )
        return out

    def _mixed_families(self) -> bool:
        ipv6 = ":" in self.address
        if any((":" in rs.address) != ipv6 for rs in self.real_server):
            return True
        return bool(self.sorry_server) and (":" in self.sorry_server) != ipv6

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.proxied and self.protocol != "tcp":
            raise ValueError(f"an {self.type} service runs over tcp")
        if self.scheduler == "lc" and not self.proxied:
            raise ValueError("scheduler lc (least connections) needs type http or https")
        if (
            self.type == "https"
            or self.certificate
            or self.hsts
            or self.redirect_http
            or self.tls_profile != "intermediate"
            or self.backend_tls
            or self.backend_ca
            or self.min_up
            or self.scheduler == "fixed"
            or self.pool
            or self.rule
            or (
                not self.proxied
                and any(r.max_connections or r.slow_start for r in self.real_server)
            )
        ):  # the later keys, checked only where set (10,000 plain services stay fast)
            later = self._later_keys()
            if later:
                raise _Problems(later)
        if self.when_down == "sorry" and not self.sorry_server:
            raise ValueError("when_down = sorry needs a sorry_server")
        if self.type == "l4" and self._mixed_families():  # NAT stays within a family
            ipv6 = ":" in self.address
            family = "IPv6" if ipv6 else "IPv4"
            problems = [
                Problem(
                    ("real_server", n, "address"),
                    f"{rs.address}: an l4 service forwards within its family ({family} here; "
                    "type http serves either)",
                )
                for n, rs in enumerate(self.real_server)
                if (":" in rs.address) != ipv6
            ]
            if self.sorry_server and (":" in self.sorry_server) != ipv6:
                problems.append(
                    Problem(
                        ("sorry_server",),
                        f"{self.sorry_server}: an l4 service forwards within its family "
                        f"({family} here)",
                    )
                )
            if problems:
                raise _Problems(problems)
        return self


UserRole = Literal["viewer", "operator", "admin"]
USER_ROLES: tuple[UserRole, ...] = ("viewer", "operator", "admin")  # each may what those before may


class User(_Model):
    """A WUI/API user. `role`: admin (everything), operator (also failover and enabling or
    disabling real servers), viewer (reading and /metrics)."""

    name: Text = Field(min_length=1, max_length=32, pattern=r"^[a-z_][a-z0-9_-]*$")
    password_hash: PasswordHash
    role: UserRole = "admin"

    @model_serializer(mode="wrap")
    def _admin_unwritten(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # An admin's role is left out: a document written before roles keeps its canonical
        # form, so its hash (the store's check, the partner's sync) stays the same.
        data: dict[str, Any] = handler(self)
        if self.role == "admin":
            data.pop("role", None)
        return data

    def may(self, role: UserRole) -> bool:
        """Whether this user may do what `role` may."""
        return USER_ROLES.index(self.role) >= USER_ROLES.index(role)


class _Named(Protocol):
    @property
    def name(self) -> str: ...


def _repeated(values: Iterable[str]) -> set[str]:
    """The values that occur more than once (one pass, a Counter)."""
    return {v for v, count in Counter(values).items() if count > 1}


def _twice(items: Iterable[_Named]) -> list[str]:
    """The names used more than once, sorted."""
    return sorted(_repeated(i.name for i in items))


def _some(values: list[str], most: int = 8) -> str:
    """A list for a message, cut short: a message stays small whatever the document holds."""
    shown = ", ".join(values[:most]) or "none"
    return f"{shown}, … ({len(values)} in all)" if len(values) > most else shown


class Document(_Model):
    appliance: Appliance = Appliance()
    ha: Ha = Ha()
    interface: tuple[Interface, ...] = Field(min_length=1)
    units: Units = Units()
    sync: Sync = Sync()
    virtual_service: tuple[VirtualService, ...] = ()
    user: tuple[User, ...] = ()
    certificate: tuple[Certificate, ...] = ()

    @model_validator(mode="after")
    def _across(self) -> Self:
        # Linear: a Counter, a set or a dict lookup per item, never a list search per item
        # (10,000 services took 1.4 s when they were; a partner's document must not outlast
        # master-down, see tests/unit/test_document_untrusted.py).
        problems: list[Problem] = []
        if not any(i.check for i in self.interface):
            problems.append(Problem(("interface",), "at least one interface needs check = true"))
        problems += [
            Problem(("interface",), f"{n} is listed twice") for n in _twice(self.interface)
        ]
        shared_list = [s.split("/")[0] for i in self.interface for s in i.shared]
        problems += [
            Problem(("interface",), f"shared address {a} is listed twice")
            for a in sorted(_repeated(shared_list))
        ]
        shared = set(shared_list)
        units = {
            address: f"the {role} unit's address on {i.name}"
            for i in self.interface
            for role in ROLES
            for address in map(str, i.addresses(role))
        }
        problems += [
            Problem(("interface", n, "shared", k), f"{address} is {units[address]}")
            for n, i in enumerate(self.interface)
            for k, address in enumerate(s.split("/")[0] for s in i.shared)
            if address in units
        ]
        seen: dict[tuple[str, int, str], str] = {}
        vs_twice = _repeated(v.name for v in self.virtual_service)
        for n, vs in enumerate(self.virtual_service):
            if vs.name in vs_twice:
                problems.append(Problem(("virtual_service", n, "name"), f"{vs.name} is used twice"))
            if vs.address not in shared:
                problems.append(
                    Problem(
                        ("virtual_service", n, "address"),
                        f"{vs.address} is not a shared address (shared: {_some(shared_list)})",
                    )
                )
            where = (vs.address, vs.port, vs.protocol)
            if where in seen:
                problems.append(
                    Problem(
                        ("virtual_service", n, "port"),
                        f"{vs.address}:{vs.port}/{vs.protocol} is already used by {seen[where]}",
                    )
                )
            seen.setdefault(where, vs.name)
        problems += self._certificates()
        problems += [Problem(("user",), f"{u} is listed twice") for u in _twice(self.user)]
        if problems:
            raise _Problems(problems)
        return self

    def _certificates(self) -> list[Problem]:
        """Certificate names unique; each https service names certificates with a key, its
        backend_ca one that exists; a redirect's port 80 free."""
        problems = [
            Problem(("certificate",), f"{c} is listed twice") for c in _twice(self.certificate)
        ]
        by_name = {c.name: c for c in self.certificate}
        listed = _some(sorted(by_name))
        taken = {(vs.address, vs.port) for vs in self.virtual_service if vs.protocol == "tcp"}
        for n, vs in enumerate(self.virtual_service):
            for k, name in enumerate(vs.certificate):
                found = by_name.get(name)
                if found is None:
                    why = f"no certificate {name!r} (there are: {listed})"
                elif not found.key:
                    why = f"{name!r} has no key: it can only verify real servers (backend_ca)"
                else:
                    continue
                problems.append(Problem(("virtual_service", n, "certificate", k), why))
            if vs.backend_ca and vs.backend_ca not in by_name:
                problems.append(
                    Problem(
                        ("virtual_service", n, "backend_ca"),
                        f"no certificate {vs.backend_ca!r} (there are: {listed})",
                    )
                )
            if vs.redirect_http and (vs.address, 80) in taken:
                problems.append(
                    Problem(
                        ("virtual_service", n, "redirect_http"),
                        f"port 80 of {vs.address} is another service's",
                    )
                )
        return problems

    def shown(self) -> dict[str, Any]:
        """The document as views show it (config show, diff, the WUI, the REST API): each
        certificate's private key replaced by a digest. Sent back (config apply), the digest
        keeps the stored key (`with_stored_keys`)."""
        data = self.model_dump(mode="json")
        for cert in data.get("certificate", ()):
            if cert.get("key"):
                cert["key"] = certs.stored_key(cert["key"])
        return data

    def certificates_used(self) -> dict[str, list[str]]:
        """certificate name -> the services that use it (to serve or to verify)."""
        used: dict[str, list[str]] = {c.name: [] for c in self.certificate}
        for vs in self.virtual_service:
            for name in {*vs.certificate, *([vs.backend_ca] if vs.backend_ca else [])}:
                used.setdefault(name, []).append(vs.name)
        return used

    # -- identity --------------------------------------------------------------------------
    def canonical(self) -> bytes:
        # a document is immutable: its canonical form is made once (a big one takes 30 ms,
        # and a commit asks for its hash several times)
        return made_once(_CANONICAL, self, self._canonical)

    def as_json(self) -> dict[str, Any]:
        """model_dump(mode="json"), made once per document (the hash, a commit's changed keys
        and a push all want it; 1000 services: 25 ms each). Shared: never change it."""
        return made_once(_DUMPED, self, lambda: self.model_dump(mode="json"))

    def wire(self) -> dict[str, Any]:
        """What a partner is sent: as_json() without the keys the canonical form leaves out.
        A partner of an earlier release then fills in its own defaults for them (a null
        would not validate there) and hashes the document as we do. Shared: never change it."""
        return made_once(_WIRE, self, self._canonical_data)

    def _canonical(self) -> bytes:
        return json.dumps(self.wire(), sort_keys=True, separators=(",", ":")).encode()

    def _canonical_data(self) -> dict[str, Any]:
        data = dict(self.as_json())  # copied where keys are left out, never changed in place
        for table in {t for t, _ in ADDED_LATER}:
            if table in data:
                data[table] = dict(data[table])
        for (table, key), default in ADDED_LATER.items():
            if data.get(table, {}).get(key, default) == default:
                data[table].pop(key, None)
        for key in ADDED_LATER_LISTS:
            if not data.get(key):
                data.pop(key, None)
        if "virtual_service" in data:
            data["virtual_service"] = [dict(vs) for vs in data["virtual_service"]]
        for vs in data.get("virtual_service", ()):
            for key, default in ADDED_LATER_VS.items():
                if vs.get(key, default) == default:
                    vs.pop(key, None)
        return data

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.canonical()).hexdigest()


# the last few documents' canonical forms and dumps (kept alive here: an id is never reused)
_CANONICAL: collections.deque[tuple[Document, bytes]] = collections.deque(maxlen=4)
_DUMPED: collections.deque[tuple[Document, dict[str, Any]]] = collections.deque(maxlen=4)
_WIRE: collections.deque[tuple[Document, dict[str, Any]]] = collections.deque(maxlen=4)


T = TypeVar("T")


def made_once(
    cache: collections.deque[tuple[Document, T]], doc: Document, make: Callable[[], T]
) -> T:
    """What `make` gives for this very document (by identity), from `cache` once made there."""
    for known, made in cache:
        if known is doc:
            return made
    made = make()
    cache.appendleft((doc, made))
    return made


def _where(loc: Loc) -> Loc:
    # without pydantic's own steps, e.g. "function-after[_ipv4(), str]"
    return tuple(p for p in loc if isinstance(p, int) or "[" not in str(p))


_TYPES = {
    "int_type": "an integer",
    "bool_type": "true or false",
    "string_type": "a string",
    "float_type": "a number",
    "tuple_type": "a list",
    "model_type": "a table",
    "dict_type": "a table",
}


def _message(e: ErrorDetails) -> str:
    """pydantic's error in an operator's words (the value shown, the limit named)."""
    kind, ctx, value = e["type"], e.get("ctx", {}), e.get("input")
    shown = type(value).__name__ if isinstance(value, (dict, list, tuple)) else _shown(value)
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    if kind in ("greater_than_equal", "greater_than"):
        return f"must be {'>=' if kind.endswith('equal') else '>'} {ctx.get('ge', ctx.get('gt'))}, not {shown}"
    if kind in ("less_than_equal", "less_than"):
        return f"must be {'<=' if kind.endswith('equal') else '<'} {ctx.get('le', ctx.get('lt'))}, not {shown}"
    if kind == "too_short":
        return f"must list at least {ctx.get('min_length')}, not {ctx.get('actual_length')}"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}, not {shown}"
    if kind in _TYPES:
        got = "a boolean" if isinstance(value, bool) else type(value).__name__
        return f"expected {_TYPES[kind]}, got {got}"
    return e["msg"].removeprefix("Value error, ")


def problems_of(error: ValidationError) -> list[Problem]:
    """Every error pydantic found, placed."""
    out = []
    for e in error.errors():
        where = _where(e["loc"])
        if e["type"] == "too_short" and len(e.get("input") or ()) >= e["ctx"]["min_length"]:
            continue  # long enough as written: its items' own errors say what is wrong
        inner = e.get("ctx", {}).get("error")
        if isinstance(inner, _Problems):
            out += [Problem(where + p.loc, p.why) for p in inner.problems]
        else:
            out.append(Problem(where, _message(e)))
    return out


def with_stored_keys(data: Any, current: Document | None) -> Any:
    """data (a document as a view showed it) with each certificate key that reads "(stored)
    sha256:…" replaced by the stored key of the certificate of that name; a key no stored
    certificate has is a Problem naming it."""
    if not isinstance(data, dict) or not isinstance(data.get("certificate"), list):
        return data
    stored = {c.name: c.key for c in (current.certificate if current else ()) if c.key}
    out, problems = dict(data), []
    out["certificate"] = []
    for n, cert in enumerate(data["certificate"]):
        if isinstance(cert, dict) and certs.is_stored(cert.get("key")):
            key = stored.get(cert.get("name"))  # type: ignore[arg-type]
            if key is None or certs.stored_key(key) != cert["key"].strip():
                problems.append(
                    Problem(
                        ("certificate", n, "key"),
                        f"no stored key {cert['key']!r} for {cert.get('name')!r}: "
                        "send the PEM private key",
                    )
                )
            else:
                cert = {**cert, "key": key}
        out["certificate"].append(cert)
    if problems:
        raise DocumentError(problems)
    return out


def parse_document(data: Any) -> Document:
    """A validated Document from a dict (parsed TOML or JSON); DocumentError lists every
    problem. Nothing is half-parsed: either all of it is valid or none is returned."""
    if not isinstance(data, dict):
        raise DocumentError([Problem(("document",), f"must be a table, not {type(data).__name__}")])
    prepared, too_deep = {}, []
    for key, value in data.items():  # one walk: lists to tuples, and nesting bounded
        try:
            prepared[key] = _nested(value, 2) if isinstance(value, _CONTAINERS) else value
        except _TooDeep:
            too_deep.append(Problem((str(key),), f"nested deeper than {MAX_DEPTH} levels"))
    if too_deep:
        raise DocumentError(too_deep)
    try:
        return Document.model_validate(prepared)
    except ValidationError as e:
        raise DocumentError(problems_of(e)) from None


_CONTAINERS = (dict, list, tuple)


class _TooDeep(Exception):
    pass


def _nested(value: Any, depth: int) -> Any:
    """value (a table or a list at `depth`; the document is level 1) with its lists as tuples
    (strict mode takes tuples only as tuples; TOML and JSON give lists). Deeper than MAX_DEPTH
    it stops: _TooDeep, so the recursion itself never goes deeper than that, and nothing
    after it (pydantic, any recursive walk) meets a deeper value."""
    if depth > MAX_DEPTH:
        raise _TooDeep
    if isinstance(value, dict):
        return {
            k: _nested(v, depth + 1) if isinstance(v, _CONTAINERS) else v for k, v in value.items()
        }
    return tuple(_nested(v, depth + 1) if isinstance(v, _CONTAINERS) else v for v in value)


def _lists_to_tuples(value: Any) -> Any:
    # strict mode takes tuples only as tuples; TOML and JSON give lists
    if isinstance(value, dict):
        return {k: _lists_to_tuples(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_lists_to_tuples(v) for v in value)
    return value


def as_earlier_release_meant(data: dict[str, Any]) -> dict[str, Any] | None:
    """A document from a partner of an earlier release with its defaults (EARLIER_DEFAULTS)
    read as unset, or None when it holds none of them."""
    out, changed = dict(data), False
    for (table, key), earlier in EARLIER_DEFAULTS.items():
        section = out.get(table)
        if isinstance(section, dict) and section.get(key) == earlier:
            out[table] = {k: v for k, v in section.items() if k != key}
            changed = True
    return out if changed else None


def to_plain(doc: Document) -> dict[str, Any]:
    """JSON/TOML-ready dict, defaults left out (what an admin would write)."""
    return doc.model_dump(mode="json", exclude_defaults=True)
