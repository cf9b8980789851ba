"""The appliance's configuration document: one for the pair, the same on both units.

Pydantic models (TOML on disk, JSON on the wire). Everything here is synced; what belongs to one
machine only (role, partner secret, directories) is the local `[unit]` table (config/ha.py).
A document has a content hash (SHA-256 of its canonical JSON); the version number is the store's.
Validation errors are Problems (a place and why), shown as `KEY: why` lines, e.g.
`virtual_service[0].port: must be 1-65535`.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails

from .. import untrusted

ROLES = ("first", "second")
# A document nests 4 deep (virtual_service[0].check.type); a value deeper than this is refused
# before anything walks it (recursion would fail on a few hundred levels).
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


def _ipv4(value: str) -> str:
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise ValueError(f"not an IPv4 address: {value!r}") from None


def _cidr(value: str) -> str:
    if "/" not in value:
        raise ValueError(f"{value!r} needs a prefix length, e.g. {value}/24")
    try:
        return str(ipaddress.IPv4Interface(value))
    except ValueError:
        raise ValueError(f"not an IPv4 address with prefix: {value!r}") from None


def _ifname(value: str) -> str:
    if not value or len(value) > 15 or "/" in value or " " in value:
        raise ValueError(f"not a valid interface name: {value!r}")
    return value


IPv4 = Annotated[str, AfterValidator(_ipv4)]
Cidr = Annotated[str, AfterValidator(_cidr)]
OptionalIPv4 = Annotated[str, AfterValidator(lambda v: _ipv4(v) if v else v)]  # "" = none
IfName = Annotated[str, AfterValidator(_ifname)]
Port = Annotated[int, Field(ge=1, le=65535)]


class _Model(BaseModel):
    # strict: a TOML boolean is no number, "80" is no port; unknown keys are errors.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Appliance(_Model):
    description: str = Field("", max_length=4096)


class Ha(_Model):
    protocol: Literal["carp", "vrrp3"] = "carp"
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

    @model_validator(mode="after")
    def _centiseconds(self) -> Self:
        if self.fast_interval_ms % 10:
            raise ValueError(
                f"fast_interval_ms must be a multiple of 10 (VRRPv3 counts "
                f"centiseconds), not {self.fast_interval_ms}"
            )
        return self


class Interface(_Model):
    name: IfName
    first: IPv4
    second: IPv4
    check: bool = True
    heartbeat: bool = False
    shared: tuple[Cidr, ...] = ()
    ping_target: OptionalIPv4 = ""
    ping_interval: float = Field(1.0, ge=0.2, le=60)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.first == self.second:
            raise ValueError("the two units need different addresses (first == second)")
        if self.heartbeat and self.shared:
            raise ValueError("the heartbeat interface carries no shared addresses")
        for cidr in self.shared:
            if cidr.split("/")[0] in (self.first, self.second):
                raise ValueError(f"shared address {cidr} is a unit's own address")
        return self


class UnitSettings(_Model):
    name: str = Field("", max_length=63)


class Units(_Model):
    first: UnitSettings = UnitSettings()
    second: UnitSettings = UnitSettings()


class Sync(_Model):
    port: Port = 6973
    interval: float = Field(5.0, ge=0.5, le=3600)  # s between (version, hash) re-checks
    history: int = Field(50, ge=2, le=10000)  # versions kept


class RealServer(_Model):
    address: IPv4
    port: Port
    weight: int = Field(1, ge=0, le=256)
    enabled: bool = True


class HealthCheck(_Model):
    type: Literal["tcp", "http", "https", "icmp", "none"] = "tcp"
    path: str = Field("/", pattern=r"^/")  # http(s)
    status: int = Field(200, ge=100, le=599)  # http(s): expected status
    host: str = ""  # http(s): Host header and SNI ("" = the address)
    verify: bool = False  # https: verify the server's certificate (real servers' are
    # mostly self-signed, so off by default, as in HAProxy)
    interval: float = Field(2.0, ge=0.1, le=3600)
    timeout: float = Field(1.0, ge=0.05, le=60)
    rise: int = Field(2, ge=1, le=100)  # successes before a server comes back
    fall: int = Field(2, ge=1, le=100)  # failures before a server leaves the pool


class VirtualService(_Model):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    address: IPv4
    port: Port
    protocol: Literal["tcp", "udp"] = "tcp"
    type: Literal["l4", "http"] = "l4"
    scheduler: Literal["rr", "wrr", "lc", "sh"] = "rr"
    persistence: int = Field(0, ge=0, le=86400)  # s of source-IP persistence; 0 = none
    cookie: bool = False  # http: cookie persistence
    x_forwarded_for: bool = True  # http
    when_down: Literal["reject", "sorry"] = "reject"
    sorry_server: OptionalIPv4 = ""
    snat: bool = False  # l4: source-NAT to the shared address on the servers' side
    check: HealthCheck = HealthCheck()
    real_server: tuple[RealServer, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.type == "http" and self.protocol != "tcp":
            raise ValueError("an http service runs over tcp")
        if self.scheduler == "lc" and self.type != "http":
            raise ValueError("scheduler lc (least connections) needs type http")
        if self.when_down == "sorry" and not self.sorry_server:
            raise ValueError("when_down = sorry needs a sorry_server")
        return self


class User(_Model):
    name: str = Field(min_length=1, max_length=32, pattern=r"^[a-z_][a-z0-9_-]*$")
    password_hash: str = Field(min_length=1)


class Document(_Model):
    appliance: Appliance = Appliance()
    ha: Ha = Ha()
    interface: tuple[Interface, ...] = Field(min_length=1)
    units: Units = Units()
    sync: Sync = Sync()
    virtual_service: tuple[VirtualService, ...] = ()
    user: tuple[User, ...] = ()

    @model_validator(mode="after")
    def _across(self) -> Self:
        problems: list[Problem] = []
        if not any(i.check for i in self.interface):
            problems.append(Problem(("interface",), "at least one interface needs check = true"))
        names = [i.name for i in self.interface]
        problems += [
            Problem(("interface",), f"{n} is listed twice")
            for n in sorted(set(names))
            if names.count(n) > 1
        ]
        shared = [s.split("/")[0] for i in self.interface for s in i.shared]
        problems += [
            Problem(("interface",), f"shared address {a} is listed twice")
            for a in sorted(set(shared))
            if shared.count(a) > 1
        ]
        seen: dict[tuple[str, int, str], str] = {}
        vs_names = [v.name for v in self.virtual_service]
        for n, vs in enumerate(self.virtual_service):
            if vs_names.count(vs.name) > 1:
                problems.append(Problem(("virtual_service", n, "name"), f"{vs.name} is used twice"))
            if vs.address not in shared:
                problems.append(
                    Problem(
                        ("virtual_service", n, "address"),
                        f"{vs.address} is not a shared address "
                        f"(shared: {', '.join(shared) or 'none'})",
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
        users = [u.name for u in self.user]
        problems += [
            Problem(("user",), f"{u} is listed twice")
            for u in sorted(set(users))
            if users.count(u) > 1
        ]
        if problems:
            raise _Problems(problems)
        return self

    # -- identity --------------------------------------------------------------------------
    def canonical(self) -> bytes:
        return json.dumps(
            self.model_dump(mode="json"), sort_keys=True, separators=(",", ":")
        ).encode()

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.canonical()).hexdigest()


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
    shown = type(value).__name__ if isinstance(value, (dict, list, tuple)) else repr(value)
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    if kind in ("greater_than_equal", "greater_than"):
        return f"must be {'>=' if kind.endswith('equal') else '>'} {ctx.get('ge', ctx.get('gt'))}, not {shown}"
    if kind in ("less_than_equal", "less_than"):
        return f"must be {'<=' if kind.endswith('equal') else '<'} {ctx.get('le', ctx.get('lt'))}, not {shown}"
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
        inner = e.get("ctx", {}).get("error")
        if isinstance(inner, _Problems):
            out += [Problem(where + p.loc, p.why) for p in inner.problems]
        else:
            out.append(Problem(where, _message(e)))
    return out


def parse_document(data: Any) -> Document:
    """A validated Document from a dict (parsed TOML or JSON); DocumentError lists every
    problem. Nothing is half-parsed: either all of it is valid or none is returned."""
    if not isinstance(data, dict):
        raise DocumentError([Problem(("document",), f"must be a table, not {type(data).__name__}")])
    try:
        untrusted.check_depth(data, MAX_DEPTH)
    except untrusted.UntrustedJSON:
        raise DocumentError([Problem(("document",), f"nested deeper than {MAX_DEPTH}")]) from None
    try:
        return Document.model_validate(_lists_to_tuples(data))
    except ValidationError as e:
        raise DocumentError(problems_of(e)) from None


def _lists_to_tuples(value: Any) -> Any:
    # strict mode takes tuples only as tuples; TOML and JSON give lists
    if isinstance(value, dict):
        return {k: _lists_to_tuples(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_lists_to_tuples(v) for v in value)
    return value


def to_plain(doc: Document) -> dict[str, Any]:
    """JSON/TOML-ready dict, defaults left out (what an admin would write)."""
    return doc.model_dump(mode="json", exclude_defaults=True)
