#!/usr/bin/env python3
"""Throughput benchmark: carpool's data planes against a bare HAProxy, in one lab, in one run.

    .venv/bin/python bench/throughput.py [--runs 3] [--duration 8] [--connections 64]
                                         [--family 4|6] [--close] [--https] [--json F]
                                         [--failover-only] [--failover-runs N]
                                         [--open-rate R] [--open-seconds S] [--keep-alive]

wrk in the client (cp-c1), HTTP/1.1 keep-alive, against:
  direct      one real server (198.18.2.101:80), routed through the active unit without NAT
  haproxy-tcp a bare HAProxy in the active unit, configured by hand: mode tcp, roundrobin over
              the three real servers (198.18.0.10:9081)
  haproxy-http the same in mode http, with the headers carpool adds (X-Forwarded-For and
              -Proto) (198.18.0.10:9080)
  carpool-l4  carpool's L4 service web-l4 (nftables DNAT, 198.18.0.10:80)
  carpool-l7  carpool's http service web-http (its managed HAProxy, 198.18.0.10:8080)
Targets (issue 4): carpool-l4 >= 1.25 x haproxy-tcp, carpool-l7 >= 0.95 x haproxy-http.
With --family 6 every address is the IPv6 one (client 2001:2::100, shared 2001:2::10, servers
2001:2:0:2::101+): carpool's services web-l4 and web-http on 2001:2::10 (L4 in table ip6 carpool),
the bare HAProxy binding [2001:2::10], the same ratios.

The lab's Python real servers are far slower than any load balancer, so each cp-rN runs a
one-thread HAProxy answering `GET /` itself (`http-request return`) instead. On 2 shared cores
(DESIGN §7) wrk is pinned to CPU 1 and every HAProxy (servers, bare, carpool's) to CPU 0; the
kernel's NAT work runs where the packets are handled. Quote the ratios, not the figures. The
targets are interleaved run by run, so a drift of the machine hits all of them alike.

With --https the targets are TLS instead: carpool's https services (ECDSA P-256 on :8443,
RSA-2048 on :8444, profile intermediate, certificates from the lab CA uploaded into the document)
against a bare HAProxy with the same certificates, ciphers and ALPN (:9443, :9444), each in two
modes: keep-alive requests/s, and with `Connection: close` (a new TCP connection and a full TLS
handshake per request: handshakes/s). Target (issue 15): carpool >= 0.95 x the bare HAProxy in
every cell.

With --close every plain target is also run with `Connection: close` (NAME-close): a new TCP
connection per request, so the L4 path pays conntrack and NAT per request and HAProxy an
accept and a connect. Targets (issue 16): keep-alive L4 >= 2 x and L7 >= 1.0 x, connection per
request L4 >= 1.5 x and L7 >= 1.0 x the bare HAProxy's.

With --open-rate R, latency instead of throughput, in an open loop: h2load (nghttp2-client)
opens R connections a second to each plain target (R/100 every 10 ms) whatever the answers do,
one request each, so a slow answer does not slow the load down (wrk's closed loop hides it);
per target p50, p99 and p99.9 of the requests (sent -> answered, from h2load's per-request log)
and the connect's mean. Targets (issue 16): carpool-l4 p99 <= haproxy-tcp's, carpool-l7 p99
<= 1.05 x haproxy-http's. With --keep-alive the same rate of requests is paced on 100
kept-alive connections (h2load --rps), the latency of a request without its connection's.

Failover under load: wrk against each carpool service while the active unit gets SIGTERM
(graceful: it bows out, the partner takes over in milliseconds); reported are the failed
requests (wrk's socket errors + non-2xx answers) out of all. L4 with round robin (numgen) and
with source hash (scheduler sh, jhash with a fixed seed: both units pick the same server).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
from carpool.lab import Lab, machine_lock
from carpool.lab.ns import write_file
from carpool.lab.topology import (
    CLIENT,
    SHARED_LAN,
    SHARED_LAN6,
    server_addr,
    server_addr6,
    server_ns,
)

SERVERS = 3
FAMILY = 4
HTTPS = False
CLOSE = False  # --close: every plain target also with a connection per request
KEYS = ("ec", "rsa")
VIP = SHARED_LAN.split("/")[0]


def server(i: int) -> str:
    """Real server i's address in the measured family."""
    return server_addr6(i) if FAMILY == 6 else server_addr(i)


def host(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def targets() -> dict[str, str]:
    if HTTPS:
        out = {}
        for n, kind in enumerate(KEYS):
            for mode in ("keepalive", "close"):
                out[f"haproxy-https-{kind}-{mode}"] = f"https://{host(VIP, 9443 + n)}/"
                out[f"carpool-https-{kind}-{mode}"] = f"https://{host(VIP, 8443 + n)}/"
        return out
    plain = {
        "direct": f"http://{host(server(1), 80)}/",
        "haproxy-tcp": f"http://{host(VIP, 9081)}/",
        "haproxy-http": f"http://{host(VIP, 9080)}/",
        "carpool-l4": f"http://{host(VIP, 80)}/",
        "carpool-l7": f"http://{host(VIP, 8080)}/",
    }
    if CLOSE:  # wrk adds `Connection: close`: a TCP handshake and a NAT/conntrack entry each
        plain |= {f"{name}-close": url for name, url in plain.items()}
    return plain


TARGETS = targets()


def use_family(family: int, https: bool = False, close: bool = False) -> None:
    """Measure IPv6 (6) or IPv4 (4), plain or TLS, and (close) each plain target also with a
    new TCP connection per request: set once, before the lab comes up."""
    global FAMILY, VIP, TARGETS, HTTPS, RATIOS, CLOSE
    FAMILY, HTTPS, CLOSE = family, https, close and not https
    if CLOSE:  # issue 16's targets for both modes
        RATIOS = (
            ("carpool-l4", "haproxy-tcp", 2.0),
            ("carpool-l7", "haproxy-http", 1.0),
            ("carpool-l4-close", "haproxy-tcp-close", 1.5),
            ("carpool-l7-close", "haproxy-http-close", 1.0),
        )
    if https:
        RATIOS = tuple(
            (f"carpool-https-{k}-{m}", f"haproxy-https-{k}-{m}", 0.95)
            for k in KEYS
            for m in ("keepalive", "close")
        )
    VIP = (SHARED_LAN6 if family == 6 else SHARED_LAN).split("/")[0]
    TARGETS = targets()


def services() -> list[dict]:
    """The lab's two services (web-l4, web-http) on the measured family's addresses (with
    --https: the two https services)."""
    check = {"type": "http", "interval": 0.5, "timeout": 0.5, "rise": 2, "fall": 2}
    pool = [{"address": server(i), "port": 80} for i in range(1, SERVERS + 1)]
    if HTTPS:
        return [
            {
                "name": f"web-https-{kind}",
                "address": VIP,
                "port": 8443 + n,
                "type": "https",
                "certificate": [kind],
                "check": check,
                "real_server": pool,
            }
            for n, kind in enumerate(KEYS)
        ]
    return [
        {"name": "web-l4", "address": VIP, "port": 80, "check": check, "real_server": pool},
        {
            "name": "web-http",
            "address": VIP,
            "port": 8080,
            "type": "http",
            "check": check,
            "real_server": pool,
        },
    ]


RATIOS = (("carpool-l4", "haproxy-tcp", 1.25), ("carpool-l7", "haproxy-http", 0.95))
LB_CPU, WRK_CPU = "0", "1"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def server_config(name: str) -> str:
    return "\n".join(
        [
            "global",
            "    nbthread 1",
            "    maxconn 4000",
            "defaults",
            "    mode http",
            "    timeout client 30s",
            "    timeout server 30s",
            "    timeout connect 2s",
            "frontend web",
            "    bind :::80 v4v6",
            f'    http-request return status 200 content-type text/plain string "{name}\\n" '
            f"hdr X-Server {name}",
            "",
        ]
    )


# What carpool's http services send their servers by default (x_forwarded_for = true), so
# the bare HAProxy does the same work: the client's address costs HAProxy 0.15-0.25 ms of p50
# at 2000 requests/s on this lab's shared CPU (BENCHMARKS.md), whoever configures it.
def forwarded(proto: str) -> list[str]:
    return [f"    http-request set-header X-Forwarded-Proto {proto}", "    option forwardfor"]


def bare_config(tls_dir: Path | None = None) -> str:
    """What an admin would write by hand for the same pool and the same request headers as
    carpool's service (defaults otherwise); with tls_dir the https listeners, with carpool's
    ciphers and ALPN."""
    servers = [f"    server r{i} {host(server(i), 80)}" for i in range(1, SERVERS + 1)]
    if tls_dir is not None:
        from carpool.dataplane.haproxy import PROFILES

        lines = ["global", "    maxconn 4000", "    tune.bufsize 65536", "defaults"]
        lines += ["    timeout client 30s", "    timeout server 30s", "    timeout connect 2s"]
        for n, kind in enumerate(KEYS):
            lines += [
                f"listen bare-https-{kind}",
                f"    bind {host(VIP, 9443 + n)} ssl crt {tls_dir / kind}.pem alpn h2,http/1.1 "
                + PROFILES["intermediate"],
                "    mode http",
                "    balance roundrobin",
                *forwarded("https"),
                *servers,
            ]
        return "\n".join([*lines, ""])
    return "\n".join(
        [
            "global",
            "    maxconn 4000",
            "    tune.bufsize 65536",
            "defaults",
            "    timeout client 30s",
            "    timeout server 30s",
            "    timeout connect 2s",
            "listen bare-http",
            f"    bind {host(VIP, 9080)}",
            "    mode http",
            "    balance roundrobin",
            *forwarded("http"),
            *servers,
            "listen bare-tcp",
            f"    bind {host(VIP, 9081)}",
            "    mode tcp",
            "    balance roundrobin",
            *servers,
            "",
        ]
    )


def descendants(pid: int) -> list[int]:
    """pid and every process below it (HAProxy -W: the master and its workers)."""
    found, todo = [], [pid]
    while todo and len(found) < 64:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                todo += [int(c) for c in task.read_text().split()]
            except OSError:
                pass
    return found


def pin(pid: int, cpu: str) -> None:
    for each in descendants(pid):
        subprocess.run(
            ["taskset", "-a", "-p", "-c", cpu, str(each)],
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )


def start_haproxy(lab: Lab, node: str, config: str, name: str) -> int:
    """Started unpinned, so it picks its thread count as carpool's HAProxy does (one per CPU);
    the caller pins it once it answers (pinning earlier races that choice)."""
    path = lab.dir / "bench" / f"{name}.cfg"
    write_file(path, config)
    proc = lab.spawn(
        node,
        ["haproxy", "-db", "-f", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return proc.pid


def threads(pid: int) -> int:
    """Threads of the process doing the work (HAProxy -W: its worker)."""
    procs = descendants(pid)
    return max(len(list(Path(f"/proc/{p}/task").iterdir())) for p in procs)


def fast_servers(lab: Lab) -> list[int]:
    """Replace the lab's Python servers by one-thread HAProxies answering on :80."""
    pids = []
    for i in range(1, SERVERS + 1):
        ns = server_ns(i)
        lab.stop_http(ns)
        pids.append(start_haproxy(lab, ns, server_config(ns), ns))
    for i in range(1, SERVERS + 1):
        lab.wait_for(
            lambda i=i: (
                server_ns(i)
                in (lab.http_get(CLIENT, f"http://{host(server(i), 80)}/", timeout=1.0) or "")
            ),
            10,
            what=f"fast server {server_ns(i)} answers",
        )
    for pid in pids:
        pin(pid, LB_CPU)
    return pids


WRK_LINE = re.compile(r"Requests/sec:\s+([\d.]+)")
SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
TOTAL = re.compile(r"(\d+) requests in")
PERCENTILE = re.compile(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", re.M)
UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk(lab: Lab, url: str, duration: float, connections: int, close: bool = False) -> dict:
    """wrk's rate, p99 and errors; close: a new connection (and TLS handshake) per request."""
    argv = [
        "taskset",
        "-c",
        WRK_CPU,
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{duration:g}s",
        "--latency",
        "--timeout",
        "2s",
        *(["-H", "Connection: close"] if close else []),
        url,
    ]
    out = lab.exec(CLIENT, argv, timeout=duration + 30).stdout
    rate = WRK_LINE.search(out)
    if not rate:
        raise RuntimeError(f"wrk gave no rate for {url}:\n{out}")
    p99 = PERCENTILE.search(out)
    errors = SOCKET_ERRORS.search(out)
    non2xx = NON_2XX.search(out)
    return {
        "rps": float(rate.group(1)),
        "p99_ms": float(p99.group(1)) * UNIT[p99.group(2)] if p99 else None,
        "requests": int(TOTAL.search(out).group(1)),
        "socket_errors": sum(map(int, errors.groups())) if errors else 0,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
    }


H2_SUMMARY = re.compile(
    r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed"
)
H2_CONNECT = re.compile(
    r"time for connect:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)"
)
OPEN_PERIOD = 0.01  # s: h2load opens rate/100 connections every 10 ms
PACED_CONNECTIONS = 100  # kept-alive connections of the paced mode, each rate/100 requests/s


def open_loop(
    lab: Lab, url: str, rate: int, seconds: float, log_file: Path, keep_alive: bool = False
) -> dict:
    """Open loop, a connection per request: h2load opens `rate` connections a second whatever
    the answers do (no coordinated omission), one request each; latency per request from its
    log (request sent -> response complete), the TCP connect's mean from its summary.

    keep_alive: paced instead, on PACED_CONNECTIONS kept-alive connections, each sending
    rate/PACED_CONNECTIONS requests a second (h2load --rps). Not strictly open: a connection
    waits for its previous answer (HTTP/1.1), so an answer later than its period delays that
    connection's next request; at 2000/s that is 50 ms, far above these targets' p99.9."""
    total = int(rate * seconds)
    per = max(1, round(rate * OPEN_PERIOD))
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log_file.unlink(missing_ok=True)
    pace = (
        ["-c", str(PACED_CONNECTIONS), "--rps", f"{rate / PACED_CONNECTIONS:g}"]
        if keep_alive
        else ["-r", str(per), "--rate-period", f"{round(OPEN_PERIOD * 1000)}ms", "-c", str(total)]
    )
    argv = [
        "taskset",
        "-c",
        WRK_CPU,
        "h2load",
        "--h1",
        *pace,
        "-n",
        str(total),
        "-m",
        "1",
        "-N",
        "2s",
        "--log-file",
        str(log_file),
        url,
    ]
    out = lab.exec(CLIENT, argv, timeout=seconds + 60).stdout
    summary = H2_SUMMARY.search(out)
    if not summary:
        raise RuntimeError(f"h2load gave no summary for {url}:\n{out[-2000:]}")
    latencies, non_200 = [], 0
    for line in log_file.read_text().splitlines():
        fields = line.split("\t")
        if len(fields) < 3:
            continue
        if fields[1] != "200":
            non_200 += 1
            continue
        latencies.append(int(fields[2]) / 1000.0)
    latencies.sort()
    connect = H2_CONNECT.search(out)

    def pct(p: float) -> float | None:
        if not latencies:
            return None
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))]

    return {
        "requests": total,
        "succeeded": int(summary.group(4)),
        "failed": int(summary.group(5)) + non_200,
        "p50_ms": pct(50),
        "p99_ms": pct(99),
        "p999_ms": pct(99.9),
        "connect_mean_ms": float(connect.group(5)) * UNIT[connect.group(6)] if connect else None,
    }


def open_loop_runs(
    lab: Lab, runs: int, rate: int, seconds: float, keep_alive: bool = False
) -> dict:
    plain = ("direct", "haproxy-tcp", "haproxy-http", "carpool-l4", "carpool-l7")
    results: dict[str, list[dict]] = {name: [] for name in plain}
    log_file = lab.dir / "bench" / "h2load.log"
    for run in range(1, runs + 1):
        for name in plain:
            r = open_loop(lab, TARGETS[name], rate, seconds, log_file, keep_alive)
            results[name].append(r)
            log(
                f"open loop run {run}/{runs} {name}: p50 {r['p50_ms']} p99 {r['p99_ms']} "
                f"p99.9 {r['p999_ms']} ms, failed {r['failed']}"
            )
    return results


def print_open_loop(results: dict, args) -> None:
    how = (
        f"{args.open_rate} requests/s on {PACED_CONNECTIONS} kept-alive connections (paced)"
        if args.keep_alive
        else f"{args.open_rate} new connections/s, one request each"
    )
    print(
        f"\nopen loop (IPv{args.family}): h2load, {how}, {args.open_seconds:g} s per target, "
        f"median of {args.runs} interleaved runs ({platform.node()}, {os.cpu_count()} cpus)"
    )
    print(
        f"{'target':<14}{'p50 ms':>9}{'p99 ms':>9}{'p99.9 ms':>10}{'connect ms':>12}{'failed':>8}"
    )
    table = {}
    for name, runs in results.items():

        def med(key: str, runs=runs) -> float:
            values = [r[key] for r in runs if r[key] is not None]
            return statistics.median(values) if values else float("nan")

        table[name] = {k: med(k) for k in ("p50_ms", "p99_ms", "p999_ms", "connect_mean_ms")}
        table[name]["failed"] = sum(r["failed"] for r in runs)
        row = table[name]
        print(
            f"{name:<14}{row['p50_ms']:>9.3f}{row['p99_ms']:>9.3f}{row['p999_ms']:>10.3f}"
            f"{row['connect_mean_ms']:>12.3f}{row['failed']:>8}"
        )
    print("\np99 ratios (target)")
    for ours, peer, target in (
        ("carpool-l4", "haproxy-tcp", 1.0),
        ("carpool-l7", "haproxy-http", 1.05),
    ):
        ratio = table[ours]["p99_ms"] / table[peer]["p99_ms"]
        verdict = "met" if ratio <= target else "NOT met"
        print(f"  {ours} / {peer}: {ratio:.2f}  (<= {target}: {verdict})")


def wait_all_up(lab: Lab, unit: str) -> None:
    def all_up():
        servers = lab.unit_status(unit)["dataplane"]["servers"]
        return len(servers) == 2 * SERVERS and all(s["up"] for s in servers)

    lab.wait_for(all_up, 15, what=f"unit {unit}: every real server up")


def pin_carpool_haproxy(lab: Lab) -> None:
    for unit in ("a", "b"):
        pid = lab.unit_status(unit)["dataplane"]["l7"]["pid"]
        if pid:
            pin(pid, LB_CPU)


def throughput(lab: Lab, runs: int, duration: float, connections: int) -> dict:
    results: dict[str, list[dict]] = {name: [] for name in TARGETS}
    for run in range(1, runs + 1):
        for name, url in TARGETS.items():
            r = wrk(lab, url, duration, connections, close=name.endswith("-close"))
            results[name].append(r)
            log(
                f"run {run}/{runs} {name}: {r['rps']:.0f} req/s, p99 {r['p99_ms']} ms, "
                f"errors {r['socket_errors'] + r['non_2xx']}"
            )
    return results


def failover_under_load(
    lab: Lab, service: str, url: str, duration: float, connections: int
) -> dict:
    active = lab.wait_for_master()
    wait_all_up(lab, active)
    result: dict = {}

    def load():
        result.update(wrk(lab, url, duration, connections))

    worker = threading.Thread(target=load)
    worker.start()
    time.sleep(duration / 3)  # the load is running; the fault comes a third into it
    lab.term(active)
    worker.join(duration + 60)
    partner = "b" if active == "a" else "a"
    new = lab.unit_status(partner)["state"]
    result.update(
        {
            "service": service,
            "from": active,
            "to": f"{partner} {new}",
            "failed": result.get("socket_errors", 0) + result.get("non_2xx", 0),
        }
    )
    log(
        f"failover under load, {service}: {result['failed']} failed of {result['requests']} "
        f"({active} -> {new})"
    )
    # Not heal(): it would restart the lab's Python servers over the fast ones.
    lab.wait_for(lambda: not lab.unit_running(active), 15, what=f"unit {active} stopped")
    lab.start_unit(active)
    lab.wait_for_master()
    pin_carpool_haproxy(lab)
    return result


def summarize(results: dict) -> dict:
    table = {}
    for name, runs in results.items():
        rps = [r["rps"] for r in runs]
        p99 = [r["p99_ms"] for r in runs if r["p99_ms"] is not None]
        table[name] = {
            "rps_median": statistics.median(rps),
            "rps_min": min(rps),
            "rps_max": max(rps),
            "p99_ms_median": statistics.median(p99) if p99 else None,
            "errors": sum(r["socket_errors"] + r["non_2xx"] for r in runs),
        }
    return table


def print_report(table: dict, failovers: list[dict], args) -> None:
    print(
        f"\nthroughput (IPv{args.family}, {VIP}): wrk -t1 -c{args.connections} "
        f"-d{args.duration:g}s keep-alive, "
        f"median of {args.runs} interleaved runs ({platform.node()}, {os.cpu_count()} cpus)"
    )
    print(f"{'target':<14}{'req/s median':>14}{'(min-max)':>20}{'p99 ms':>10}{'errors':>8}")
    for name, row in table.items():
        spread = f"({row['rps_min']:.0f}-{row['rps_max']:.0f})"
        print(
            f"{name:<14}{row['rps_median']:>14.0f}{spread:>20}"
            f"{row['p99_ms_median'] or float('nan'):>10.2f}{row['errors']:>8}"
        )
    print("\nratios (target)")
    for ours, peer, target in RATIOS if table else ():
        ratio = table[ours]["rps_median"] / table[peer]["rps_median"]
        verdict = "met" if ratio >= target else "NOT met"
        print(f"  {ours} / {peer}: {ratio:.2f}  (>= {target}: {verdict})")
        p99 = table[ours]["p99_ms_median"], table[peer]["p99_ms_median"]
        if all(p99):
            print(f"    p99 {p99[0]:.2f} ms vs {p99[1]:.2f} ms")
    print("\nfailover under load (SIGTERM of the active unit)")
    for f in failovers:
        print(
            f"  {f['service']:<22} failed {f['failed']} of {f['requests']} requests "
            f"(socket errors {f['socket_errors']}, non-2xx {f['non_2xx']}; "
            f"{f['from']} -> {f['to']})"
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--no-failover", action="store_true")
    ap.add_argument(
        "--failover-only", action="store_true", help="no throughput runs: the failovers alone"
    )
    ap.add_argument(
        "--failover-runs", type=int, default=1, help="failovers under load per service (1..10)"
    )
    ap.add_argument("--family", type=int, choices=(4, 6), default=4, help="the client's family")
    ap.add_argument(
        "--https",
        action="store_true",
        help="TLS targets: carpool's https services vs a bare HAProxy (ECDSA and RSA, keep-alive "
        "and a handshake per request); no failover part",
    )
    ap.add_argument(
        "--close",
        action="store_true",
        help="each plain target also with `Connection: close` (a new TCP connection per "
        "request), issue 16's connection-per-request ratios",
    )
    ap.add_argument(
        "--open-rate",
        type=int,
        default=0,
        help="instead of throughput: open-loop latency at this many new connections (one "
        "request each) a second, the same for every target (a multiple of 100)",
    )
    ap.add_argument("--open-seconds", type=float, default=5.0, help="per target and run")
    ap.add_argument(
        "--keep-alive",
        action="store_true",
        help="with --open-rate: the requests paced on 100 kept-alive connections instead of "
        "a new connection each",
    )
    ap.add_argument("--json", help="write the results here (- for stdout)")
    args = ap.parse_args()
    if not 1 <= args.runs <= 20 or not 1 <= args.duration <= 120:
        ap.error("--runs 1..20, --duration 1..120")
    if not 1 <= args.failover_runs <= 10:
        ap.error("--failover-runs 1..10")
    if args.open_rate and not (100 <= args.open_rate <= 50000 and 1 <= args.open_seconds <= 60):
        ap.error("--open-rate 100..50000, --open-seconds 1..60")
    if args.keep_alive and not args.open_rate:
        ap.error("--keep-alive goes with --open-rate")
    use_family(args.family, args.https, args.close)
    issued = {}
    if args.https:
        from carpool.lab.pki import LabCA

        ca = LabCA()
        issued = {kind: ca.issue("bench.lab.test", VIP, kind=kind) for kind in KEYS}
    certificates = [{"name": k, "chain": c.chain, "key": c.key} for k, c in issued.items()]
    with machine_lock(timeout=1800):
        lab = Lab()
        try:
            log("lab up")
            overrides = {"virtual_service": services()}
            if certificates:
                overrides["certificate"] = certificates
            lab.up(servers=SERVERS, overrides=overrides)
            active = lab.wait_for_master()
            lab.exec(CLIENT, ["sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1"], check=True)
            fast_servers(lab)
            tls_dir = None
            if issued:
                tls_dir = lab.dir / "bench" / "tls"
                for kind, cert in issued.items():
                    write_file(tls_dir / f"{kind}.pem", cert.chain + cert.key, mode=0o600)
            bare = start_haproxy(lab, active, bare_config(tls_dir), "bare")
            probe = next(iter(TARGETS.values())) if issued else TARGETS["haproxy-http"]
            lab.wait_for(
                lambda: (
                    lab.exec(CLIENT, ["curl", "-skf", "--max-time", "1", probe]).returncode == 0
                ),
                10,
                what="bare HAProxy answers",
            )
            pin(bare, LB_CPU)
            wait_all_up(lab, active)
            pin_carpool_haproxy(lab)
            carpool_l7 = lab.unit_status(active)["dataplane"]["l7"]["pid"]
            log(
                f"threads: bare HAProxy {threads(bare)}, carpool's HAProxy worker "
                f"{threads(carpool_l7)}"
            )
            if args.open_rate:
                opened = open_loop_runs(
                    lab, args.runs, args.open_rate, args.open_seconds, args.keep_alive
                )
                print_open_loop(opened, args)
                if args.json:
                    Path(args.json).write_text(json.dumps({"open_loop": opened}, indent=2))
                return 0
            results = (
                {}
                if args.failover_only
                else throughput(lab, args.runs, args.duration, args.connections)
            )
            failovers = []
            if not args.no_failover and not args.https:
                for service, url, scheduler in (
                    ("l4 rr", TARGETS["carpool-l4"], "rr"),
                    ("l4 source hash", TARGETS["carpool-l4"], "sh"),
                    ("l7 (http)", TARGETS["carpool-l7"], None),
                ):
                    if scheduler is not None:
                        lab.exec(
                            lab.wait_for_master(),
                            [
                                "carpool",
                                "config",
                                "set",
                                "virtual_service[web-l4].scheduler",
                                scheduler,
                            ],
                            check=True,
                        )
                    for _ in range(args.failover_runs):
                        failovers.append(
                            failover_under_load(lab, service, url, 9.0, args.connections)
                        )
        finally:
            lab.down()
    table = summarize(results)
    print_report(table, failovers, args)
    if args.json:
        data = json.dumps(
            {"table": table, "runs": results, "failover": failovers, "args": vars(args)}, indent=2
        )
        sys.stdout.write(data + "\n") if args.json == "-" else Path(args.json).write_text(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
