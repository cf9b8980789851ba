"""Source-address persistence tables of the managed HAProxy, kept over a reload (pure).

HAProxy's own hand-over (the old worker teaches the new one through the local peer) loses the
tables when a reload comes before the worker finished its own resync, which takes 5 s and more
after each start (seen in the lab: 3 of 3 reloads 5 s after a start emptied the table on both
units). So carpool reads each table before a reload and writes it into the new worker
(`set table ... data.server_id`), mapping HAProxy's server ids through the servers' addresses,
since ids follow the order of the servers and that order can change.
"""

from __future__ import annotations

import re

# address:port, an IPv6 address in brackets (its first group is no port)
_SERVER = re.compile(r"^\s+server (\S+) (?:\[([0-9A-Fa-f:.]+)\]|([^\s:\[]+)):(\d+)\b")
_ENTRY = re.compile(r"key=(\S+) .*?server_id=(\d+)")


def servers_by_id(config: str) -> dict[str, dict[int, tuple[str, int]]]:
    """backend -> {server id: (address, port)} of the backends with a stick table (HAProxy
    numbers a backend's servers 1, 2, ... in the order they are declared)."""
    found: dict[str, dict[int, tuple[str, int]]] = {}
    backend, sticky = None, False
    servers: dict[int, tuple[str, int]] = {}
    for line in config.splitlines() + ["backend -"]:
        if not line.startswith(" ") and line.strip():
            if backend and sticky:
                found[backend] = servers
            words = line.split()
            backend = words[1] if words[0] == "backend" and len(words) > 1 else None
            sticky, servers = False, {}
        elif backend:
            if line.strip().startswith("stick-table "):
                sticky = True
            m = _SERVER.match(line)
            if m:
                servers[len(servers) + 1] = (m[2] or m[3], int(m[4]))
    return found


def entries(answer: str) -> list[tuple[str, int]]:
    """(client, server id) of a `show table` answer."""
    return [(m[1], int(m[2])) for m in map(_ENTRY.search, answer.splitlines()) if m]


def restore_commands(saved: dict[str, list[tuple[str, int]]], old: str, new: str) -> list[str]:
    """The `set table` commands that put the saved clients into the new configuration's
    tables, each with the server of the same address (clients of servers gone are left out)."""
    before, after = servers_by_id(old), servers_by_id(new)
    commands = []
    for backend, clients in saved.items():
        if backend not in after:
            continue
        new_id = {server: i for i, server in after[backend].items()}
        for client, old_id in clients:
            server = before.get(backend, {}).get(old_id)
            if server in new_id:
                commands.append(f"set table {backend} key {client} data.server_id {new_id[server]}")
    return commands
