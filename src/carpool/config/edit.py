"""Changes to the appliance document as typed operations: what `carpool vs|rs|passwd|config set`,
the REST API and the WUI's forms ask the daemon to do. Pure.

Each operation's `apply(document) -> document` takes the document as a dict (its JSON form) and
returns a new one; the input is never changed. The daemon applies an `Edit` (operations, and
optionally the version they were made against) to its current version, under the store's
writer: two editors never lose each other's change, and `expect_version` makes it a
compare-and-set. Whether the result is valid is the document's own validation.

Errors are typed (`EditError` and its subclasses, each naming its key) and cross the control
socket as JSON (`to_json`, `error_of`): callers choose exit codes and HTTP statuses by type.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

from .. import untrusted
from .document import MAX_DEPTH, Loc, Problem

INVALID = "invalid configuration, nothing changed:"


# -- errors --------------------------------------------------------------------------------
class EditError(Exception):
    """Why a change was not made; `key` names what it is about (a dotted key or a field)."""

    code: ClassVar[str] = "refused"

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key, self.message = key, message

    def to_json(self) -> dict[str, Any]:
        return {"error": self.message, "code": self.code, "key": self.key}

    @classmethod
    def _from_json(cls, data: dict[str, Any]) -> EditError:
        return cls(str(data.get("key", "")), str(data["error"]))


class Refused(EditError):
    """Not done for another reason (the store failed, the [unit] table, a bad request)."""


class Standby(EditError):
    """This unit is the standby: changes are made on the active unit (`active`)."""

    code = "standby"

    def __init__(self, message: str, active: str = ""):
        super().__init__("", message)
        self.active = active

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "active": self.active}

    @classmethod
    def _from_json(cls, data: dict[str, Any]) -> EditError:
        return cls(str(data["error"]), str(data.get("active", "")))


class NotFound(EditError):
    code = "not_found"


class AlreadyExists(EditError):
    code = "exists"


class Invalid(EditError):
    """The change makes an invalid document or names a key wrongly. `subject` is where the
    edited item sits in the new document (a form or a request body shows problems relative
    to it)."""

    code = "invalid"

    def __init__(self, problems: Sequence[Problem], subject: Loc = (), message: str | None = None):
        self.problems, self.subject = tuple(problems), tuple(subject)
        super().__init__(
            self.problems[0].key if self.problems else "",
            message or "\n".join([INVALID, *map(str, self.problems)]),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            **super().to_json(),
            "subject": list(self.subject),
            "problems": [{"loc": list(p.loc), "why": p.why} for p in self.problems],
        }

    @classmethod
    def _from_json(cls, data: dict[str, Any]) -> EditError:
        return cls(
            [Problem(tuple(p["loc"]), str(p["why"])) for p in data["problems"]],
            tuple(data.get("subject") or ()),
            str(data["error"]),
        )


def invalid(loc: Loc, why: str, headline: str = INVALID) -> Invalid:
    return Invalid([Problem(loc, why)], message=f"{headline}\n{Problem(loc, why)}")


class Conflict(EditError):
    """The edit was made against another version than the current one (compare-and-set)."""

    code = "conflict"

    def __init__(self, expected_version: int, current_version: int):
        super().__init__(
            "expect_version",
            f"the configuration changed meanwhile: expected "
            f"version {expected_version}, current is "
            f"{current_version}; nothing changed",
        )
        self.expected_version, self.current_version = expected_version, current_version

    def to_json(self) -> dict[str, Any]:
        return {
            **super().to_json(),
            "expected_version": self.expected_version,
            "current_version": self.current_version,
        }

    @classmethod
    def _from_json(cls, data: dict[str, Any]) -> EditError:
        return cls(int(data["expected_version"]), int(data["current_version"]))


_ERRORS = {c.code: c for c in (Refused, Standby, NotFound, AlreadyExists, Invalid, Conflict)}


def error_of(answer: dict[str, Any]) -> EditError | None:
    """The typed error of a control answer (None: it succeeded). An answer without a known
    code (an older daemon, a failed handler) is Refused."""
    if "error" not in answer:
        return None
    try:
        return _ERRORS.get(str(answer.get("code")), Refused)._from_json(answer)
    except (KeyError, TypeError, ValueError):
        return Refused(str(answer.get("key", "")), str(answer["error"]))


# -- dotted keys -----------------------------------------------------------------------------
_PART = re.compile(r"([A-Za-z_]\w*)(?:\[([^\]]+)\])?")


def _parts(key: str) -> list[tuple[str, str | None, str]]:
    """(name, item or None, the key up to here) for `interface[eth0].ping_target`; item
    brackets may hold dots (`virtual_service[web.v2]`)."""
    out, pos = [], 0
    while True:
        m = _PART.match(key, pos)
        if not m:
            raise invalid((), f"{key!r} is no dotted key (e.g. ha.vhid, interface[eth0].check)")
        out.append((m[1], m[2], key[: m.end()]))
        pos = m.end()
        if pos == len(key):
            return out
        if key[pos] != ".":
            raise invalid((), f"{key!r} is no dotted key (e.g. ha.vhid, interface[eth0].check)")
        pos += 1


def _item(items: list[Any], ref: str) -> int | None:
    """A list item by name, by ADDRESS:PORT (real servers), else by number."""
    for n, i in enumerate(items):
        if isinstance(i, dict) and (
            i.get("name") == ref or f"{i.get('address')}:{i.get('port')}" == ref
        ):
            return n
    return int(ref) if ref.isdigit() and int(ref) < len(items) else None


def _set(node: dict[str, Any], key: str, value: Any, at: Loc = ()) -> None:
    """Set the dotted key inside node (changed in place: the caller's copy); None removes it."""
    parts = _parts(key)
    for n, (name, ref, so_far) in enumerate(parts):
        last = n == len(parts) - 1
        if not isinstance(node, dict):
            raise invalid(at, f"a value, not a table: {key} cannot be set inside it")
        if ref is None:
            at += (name,)
            if not last:
                node = node.setdefault(name, {})
            elif value is None:
                node.pop(name, None)
            else:
                node[name] = value
            continue
        items = node.get(name, [])
        if not isinstance(items, list):
            raise invalid(at + (name,), f"not a list: {key} names an item of it")
        k = _item(items, ref)
        if k is None:
            raise NotFound(so_far, f"no {name} named or numbered {ref!r}")
        at += (name, k)
        if last:
            raise invalid(at, f"set a key inside {so_far}, not the whole item")
        node = items[k]


# -- operations ------------------------------------------------------------------------------
def _shallow(value: Any, loc: Loc) -> None:
    """Invalid if value nests deeper than a document may (before anything walks or shows it)."""
    try:
        untrusted.check_depth(value, MAX_DEPTH)
    except untrusted.UntrustedJSON:
        raise invalid(loc, f"nested deeper than {MAX_DEPTH}") from None


_TYPES: dict[str, type] = {"str": str, "int": int, "dict": dict}


@dataclass(frozen=True)
class Op:
    """One change. Subclasses: OP (the wire name), apply(), describe()."""

    OP: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for f in fields(self):  # ops come as JSON: a wrong type is the request's problem
            # f.type is the annotation's text: "str", "int", "dict[str, Any]" ("Any": unchecked)
            kind = str(f.type).partition("[")[0]
            want, value = _TYPES.get(kind), getattr(self, f.name)
            _shallow(value, (f.name,))
            if want and (not isinstance(value, want) or isinstance(value, bool)):
                raise invalid((f.name,), f"expected {kind}, got {type(value).__name__}")

    def apply(self, document: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def subject(self, before: dict[str, Any]) -> Loc:
        """Where the edited item sits after apply(before); () for the whole document."""
        return ()

    def describe(self) -> str:
        return self.OP

    def to_json(self) -> dict[str, Any]:
        return {"op": self.OP, **asdict(self)}


def _tables(table: dict[str, Any], key: str, place: Loc, create: bool) -> list[dict[str, Any]]:
    """table[key] as a list of tables; Invalid naming the place when an earlier step of the
    same edit left it something else (create: an empty list is put in when it is missing)."""
    items = table.setdefault(key, []) if create else table.get(key, [])
    if not isinstance(items, list):
        raise invalid((*place, key), "must be a list of tables")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise invalid((*place, key, i), "must be a table")
    return items


def _services(doc: dict[str, Any], create: bool = False) -> list[dict[str, Any]]:
    return _tables(doc, "virtual_service", (), create)


def _servers(doc: dict[str, Any], n: int, create: bool = False) -> list[dict[str, Any]]:
    return _tables(_services(doc)[n], "real_server", ("virtual_service", n), create)


def _named(items: list[dict[str, Any]], name: str, table: str, what: str) -> int:
    """The index of the item called `name`, or NotFound naming the ones there are."""
    for n, item in enumerate(items):
        if item.get("name") == name:
            return n
    names = ", ".join(str(i.get("name")) for i in items) or "none"
    raise NotFound(f"{table}[{name}]", f"no {what} {name!r} (there are: {names})")


def _service(doc: dict[str, Any], name: str) -> int:
    return _named(_services(doc), name, "virtual_service", "virtual service")


def _server(doc: dict[str, Any], n: int, address: Any, port: Any) -> int | None:
    for k, rs in enumerate(_servers(doc, n)):
        if (rs.get("address"), rs.get("port")) == (address, port):
            return k
    return None


def _server_or_404(doc: dict[str, Any], n: int, address: str, port: int) -> int:
    k = _server(doc, n, address, port)
    if k is None:
        name = doc["virtual_service"][n].get("name")
        raise NotFound(
            f"virtual_service[{name}].real_server[{address}:{port}]",
            f"{name} has no real server {address}:{port}",
        )
    return k


@dataclass(frozen=True)
class AddVirtualService(Op):
    service: dict[str, Any]
    OP: ClassVar[str] = "vs.add"

    def apply(self, document: dict[str, Any]) -> dict[str, Any]:
        name = self.service.get("name")
        if any(v.get("name") == name for v in _services(document)):
            raise AlreadyExists(
                f"virtual_service[{name}]", f"virtual service {name!r} exists already"
            )
        doc = copy.deepcopy(document)
        _services(doc, create=True).append(copy.deepcopy(self.service))
        return doc

    def subject(self, before: dict[str, Any]) -> Loc:
        return ("virtual_service", len(_services(before)))

    def describe(self) -> str:
        return f"vs add {self.service.get('name')}"


@dataclass(frozen=True)
class ReplaceVirtualService(Op):
    """The whole service (a form, an API PUT); it may be renamed."""

    name: str
    service: dict[str, Any]
    OP: ClassVar[str] = "vs.replace"

    def apply(self, document: dict[str, Any]) -> dict[str, Any]:
        n = _service(document, self.name)
        doc = copy.deepcopy(document)
        doc["virtual_service"][n] = copy.deepcopy(self.service)
        return doc

    def subject(self, before: dict[str, Any]) -> Loc:
        return ("virtual_service", _service(before, self.name))

    def describe(self) -> str:
        return f"vs set {self.name}"


@dataclass(frozen=True)
class SetVirtualService(Op):
    """One dotted key inside the service: `scheduler`, `check.type`."""

    name: str
    key: str
    value: Any
    OP: ClassVar[str] = "vs.set"

    def apply(self, document: dict[str, Any]) -> dict[str, Any]:
        n = _service(document, self.name)
        doc = copy.deepcopy(document)
        _set(doc["virtual_service"][n], self.key, copy.deepcopy(self.value), ("virtual_service", n))
        return doc

    def subject(self, before: dict[str, Any]) -> Loc:
        return ("virtual_service", _service(before, self.name))

    def describe(self) -> str:
        return f"vs set {self.name} {self.key}"


@dataclass(frozen=True)
class RemoveVirtualService(Op):
    name: str
    OP: ClassVar[str] = "vs.remove"

    def apply(self, document: dict[str, Any]) -> dict[str, Any]:
        n = _service(document, self.name)
        doc = copy.deepcopy(document)
        del doc["virtual_service"][n]
        return doc

    def describe(self) -> str:
        return f"vs rm {self.name}"


@dataclass(frozen=True)
class AddRealServer(Op):
    service: str
    server: dict[str, Any]
    OP: ClassVar[str] = "rs.add"

    def apply(self, document: dict[str, Any]) -> dict[str, Any]:
        n = _service(document, self.service)
        address, port = self.server.get("address"), self.server.get("port")
        if _server(document, n, address, port) is not None:
            raise AlreadyExists(
                f"virtual_service[{self.service}].real_server[{address}:{port}]",
                f"{self.service} has {address}:{port} already",
            )
        doc = copy.deepcopy(document)
        _servers(doc, n, create=True).append(copy.deepcopy(self.server))
        return doc

    def subject(self, before: dict[str, Any]) -> Loc:
        n = _service(before, self.service)
        return (
            "virtual_service",
            n,
            "real_server",
            len(_servers(before, n)),
        )

    def describe(self) -> str:
        return f"rs add {self.service} {self.server.get('address')}:{self.server.get('port')}"


@dataclass(frozen=True)
class _OnRealServer(Op):
    """An operation on one existing real server of a service (found by address and port)."""

    service: str
    address: str
    port: int

    def at(self, document: dict[str, Any]) -> tuple[int, int]:
        """(service index, server index), or NotFound naming which."""
        n = _service(document, self.service)
        return n, _server_or_404(document, n, self.address, self.port)

    def subject(self, before: dict[str, Any]) -> Loc:
        n, k = self.at(before)
        return ("virtual_service", n, "real_server", k)


@dataclass(frozen=True)
class ReplaceRealServer(_OnRealServer):
    server: dict[str, Any]
    OP: ClassVar[str] = "rs.replace"

    def apply(self, document: dict[str, Any]) -> dict[str, Any]:
        n, k = self.at(document)
        doc = copy.deepcopy(document)
        _servers(doc, n)[k] = copy.deepcopy(self.server)
        return doc

    def describe(self) -> str:
        return f"rs set {self.service} {self.address}:{self.port}"


@dataclass(frozen=True)
class SetRealServer(_OnRealServer):
    """One key of a real server: `weight`, `enabled` (`carpool rs enable|disable|set`)."""

    key: str
    value: Any
    OP: ClassVar[str] = "rs.set"

    def apply(self, document: dict[str, Any]) -> dict[str, Any]:
        n, k = self.at(document)
        doc = copy.deepcopy(document)
        place = ("virtual_service", n, "real_server", k)
        _set(_servers(doc, n)[k], self.key, copy.deepcopy(self.value), place)
        return doc

    def describe(self) -> str:
        return f"rs set {self.service} {self.address}:{self.port} {self.key}"


@dataclass(frozen=True)
class RemoveRealServer(_OnRealServer):
    OP: ClassVar[str] = "rs.remove"

    def apply(self, document: dict[str, Any]) -> dict[str, Any]:
        n, k = self.at(document)
        doc = copy.deepcopy(document)
        del _servers(doc, n)[k]
        return doc

    def describe(self) -> str:
        return f"rs rm {self.service} {self.address}:{self.port}"


@dataclass(frozen=True)
class SetPassword(Op):
    """A WUI/API user's password hash (argon2, made by the caller: the password itself never
    travels); the user is added if new."""

    user: str
    password_hash: str
    OP: ClassVar[str] = "passwd"

    def apply(self, document: dict[str, Any]) -> dict[str, Any]:
        if not self.password_hash.startswith("$argon2"):
            raise invalid(
                ("user",),
                f"{self.user}: the password hash must be argon2 (carpool "
                f"passwd makes one), never a clear password",
            )
        doc = copy.deepcopy(document)
        users = doc.setdefault("user", [])
        found = [u for u in users if u.get("name") == self.user]
        if found:
            found[0]["password_hash"] = self.password_hash
        else:
            users.append({"name": self.user, "password_hash": self.password_hash})
        return doc

    def describe(self) -> str:
        return f"passwd {self.user}"


def _certificates(doc: dict[str, Any], create: bool = False) -> list[dict[str, Any]]:
    return _tables(doc, "certificate", (), create)


def _certificate(doc: dict[str, Any], name: str) -> int:
    return _named(_certificates(doc), name, "certificate", "certificate")


@dataclass(frozen=True)
class AddCertificate(Op):
    """A certificate: its PEM chain (leaf first) and private key; without a key, CA
    certificates for verifying real servers (backend_ca)."""

    name: str
    chain: str
    key: str = ""
    OP: ClassVar[str] = "cert.add"

    def apply(self, document: dict[str, Any]) -> dict[str, Any]:
        if any(c.get("name") == self.name for c in _certificates(document)):
            raise AlreadyExists(
                f"certificate[{self.name}]",
                f"certificate {self.name!r} exists already (cert.replace renews it)",
            )
        doc = copy.deepcopy(document)
        entry = {"name": self.name, "chain": self.chain}
        if self.key:
            entry["key"] = self.key
        _certificates(doc, create=True).append(entry)
        return doc

    def subject(self, before: dict[str, Any]) -> Loc:
        return ("certificate", len(_certificates(before)))

    def describe(self) -> str:
        return f"cert add {self.name}"

    def __repr__(self) -> str:  # never the key, wherever an op is logged
        return f"AddCertificate(name={self.name!r})"


@dataclass(frozen=True)
class ReplaceCertificate(Op):
    """A renewed chain; with no key the stored one stays (a renewal for the same key)."""

    name: str
    chain: str
    key: str = ""
    OP: ClassVar[str] = "cert.replace"

    def apply(self, document: dict[str, Any]) -> dict[str, Any]:
        n = _certificate(document, self.name)
        doc = copy.deepcopy(document)
        entry = doc["certificate"][n]
        entry["chain"] = self.chain
        if self.key:
            entry["key"] = self.key
        return doc

    def subject(self, before: dict[str, Any]) -> Loc:
        return ("certificate", _certificate(before, self.name))

    def describe(self) -> str:
        return f"cert replace {self.name}"

    def __repr__(self) -> str:
        return f"ReplaceCertificate(name={self.name!r})"


@dataclass(frozen=True)
class RemoveCertificate(Op):
    name: str
    OP: ClassVar[str] = "cert.remove"

    def apply(self, document: dict[str, Any]) -> dict[str, Any]:
        n = _certificate(document, self.name)
        users = [
            str(vs.get("name"))
            for vs in _services(document)
            if self.name in (vs.get("certificate") or ()) or vs.get("backend_ca") == self.name
        ]
        if users:
            raise Refused(
                f"certificate[{self.name}]",
                f"certificate {self.name!r} is used by {', '.join(users)}: change those first",
            )
        doc = copy.deepcopy(document)
        del doc["certificate"][n]
        return doc

    def describe(self) -> str:
        return f"cert remove {self.name}"


@dataclass(frozen=True)
class SetKey(Op):
    """Any dotted key: `appliance.description`, `ha.vhid`, `interface[eth0].ping_target`,
    `virtual_service[web].persistence` (list items by name or number); value None removes it
    (the default applies)."""

    key: str
    value: Any = None
    OP: ClassVar[str] = "set"

    def apply(self, document: dict[str, Any]) -> dict[str, Any]:
        doc = copy.deepcopy(document)
        _set(doc, self.key, copy.deepcopy(self.value))
        return doc

    def describe(self) -> str:
        return f"set {self.key}"


OPS: dict[str, type[Op]] = {
    c.OP: c
    for c in (
        AddVirtualService,
        ReplaceVirtualService,
        SetVirtualService,
        RemoveVirtualService,
        AddRealServer,
        ReplaceRealServer,
        SetRealServer,
        RemoveRealServer,
        SetPassword,
        SetKey,
        AddCertificate,
        ReplaceCertificate,
        RemoveCertificate,
    )
}


def op_of(data: Any) -> Op:
    """An operation from its JSON form; Invalid names what is wrong with it."""
    if not isinstance(data, dict) or data.get("op") not in OPS:
        shown = data.get("op") if isinstance(data, dict) else type(data).__name__
        raise invalid(("op",), f"one of {', '.join(OPS)}, not {shown!r:.80}")
    kind = OPS[data["op"]]
    args = {k: v for k, v in data.items() if k != "op"}
    names = {f.name for f in fields(kind)}
    if set(args) - names:
        raise invalid((sorted(set(args) - names)[0],), f"unknown for {kind.OP}")
    try:
        return kind(**args)
    except TypeError:
        missing = sorted(n for n in names if n not in args)
        raise invalid((missing[0] if missing else "op",), f"required for {kind.OP}") from None


@dataclass(frozen=True)
class Edit:
    """Operations applied together (all or none), optionally only to `expect_version`."""

    ops: tuple[Op, ...]
    expect_version: int | None = None

    def apply(self, document: dict[str, Any], version: int) -> dict[str, Any]:
        if self.expect_version is not None and self.expect_version != version:
            raise Conflict(self.expect_version, version)
        for op in self.ops:
            document = op.apply(document)
        return document

    def subject(self, before: dict[str, Any]) -> Loc:
        return self.ops[0].subject(before) if len(self.ops) == 1 else ()

    def describe(self) -> str:
        """For the history's `who` (which keys changed is its `what`)."""
        if len(self.ops) > 3:
            return f"{self.ops[0].describe()}, ... ({len(self.ops)} changes)"
        return ", ".join(op.describe() for op in self.ops)

    def to_json(self) -> dict[str, Any]:
        return {"ops": [op.to_json() for op in self.ops], "expect_version": self.expect_version}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Edit:
        ops, expect = data.get("ops"), data.get("expect_version")
        _shallow(ops, ("ops",))
        if not isinstance(ops, list) or not ops:
            raise invalid(("ops",), "a list of one or more operations")
        if expect is not None and (not isinstance(expect, int) or isinstance(expect, bool)):
            raise invalid(("expect_version",), f"a version number, not {expect!r}")
        return cls(tuple(op_of(o) for o in ops), expect)
