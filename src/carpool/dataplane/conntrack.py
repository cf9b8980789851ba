"""Connection-state sync for the L4 data plane: conntrackd between the two units.

NAT picks a connection's real server on its first packet; a unit taking over without that
state resets every established L4 flow (DESIGN §7). Both units run conntrackd (FTFW, UDP over the
heartbeat link, the other checked links as fail-over links) with the external cache disabled:
the partner's entries are written straight into the standby's kernel table, so a takeover needs
no commit step and adds nothing to the takeover path. TCP window tracking is made liberal
(nf_conntrack_tcp_be_liberal), as conntrackd's documentation advises: a synced entry's windows
lag the flow by a few packets.

carpool runs `conntrackd -C <run_dir>/conntrackd.conf` as its child, restarts it when it dies,
and stops it at shutdown. Off with `ha.state_sync = false`, or when conntrackd is not installed
or no interface is a heartbeat (logged once).
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from .. import events, files
from .process import dies_with_us, stop_process

log = events.logger("carpool.conntrack", events.Kind.DATAPLANE)
CONNTRACKD = "conntrackd"
PORT = 3780
LIBERAL = "/proc/sys/net/netfilter/nf_conntrack_tcp_be_liberal"


def config_text(
    links: list[tuple[str, str, str]], ignore: list[str], run_dir: Path, port: int = PORT
) -> str:
    """links: (interface, own address, partner address), the first the default link."""
    lines = [
        "Sync {",
        "    Mode FTFW {",
        "        DisableExternalCache on",
        "        StartupResync on",
        "    }",
    ]
    for n, (iface, own, partner) in enumerate(links):
        family = "IPv6" if ":" in own else "IPv4"  # an IPv6-only link syncs over IPv6
        lines += [
            "    UDP Default {" if n == 0 else "    UDP {",
            f"        {family}_address {own}",
            f"        {family}_Destination_Address {partner}",
            f"        Port {port}",
            f"        Interface {iface}",
            "        Checksum on",
            "    }",
        ]
    lines += [
        "}",
        "General {",
        "    HashSize 8192",
        "    HashLimit 131072",
        f"    LogFile {run_dir / 'conntrackd.log'}",
        "    Syslog off",
        f"    LockFile {run_dir / 'conntrackd.lock'}",
        "    UNIX {",
        f"        Path {run_dir / 'conntrackd.ctl'}",
        "    }",
        "    NetlinkBufferSize 2097152",
        "    NetlinkBufferSizeMaxGrowth 8388608",
        "    Filter From Userspace {",
        "        Protocol Accept {",
        "            TCP",
        "            UDP",
        "        }",
        "        Address Ignore {",
        # connections to the units themselves (sync, WUI, heartbeat) stay local
        *[
            f"            IPv{6 if ':' in a else 4}_address {a}"
            for a in ["127.0.0.1", "::1", *ignore]
        ],
        "        }",
        "    }",
        "}",
        "",
    ]
    return "\n".join(lines)


def wanted(cfg) -> tuple[list[tuple[str, str, str]], list[str]] | None:
    """(links, addresses to ignore) for this unit, or None when there is nothing to sync over."""
    doc = cfg.document
    if not doc.ha.state_sync:
        return None
    heartbeat = list(cfg.heartbeats)
    if not heartbeat:
        return None
    others = [i for i in cfg.checked if not i.heartbeat]
    links = [(i.name, str(i.own(cfg.role)), str(i.partner(cfg.role))) for i in heartbeat + others]
    ignore = sorted(
        str(a)
        for i in cfg.interfaces
        for a in (i.own(cfg.role), i.partner(cfg.role), i.own6(cfg.role), i.partner6(cfg.role))
        if a is not None
    )
    return links, ignore


class ConntrackSync:
    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)
        self.cfg_path = self.dir / "conntrackd.conf"
        self.proc: asyncio.subprocess.Process | None = None
        self.text: str | None = None
        self.restarts = 0
        self.last_error = ""
        self.off_reason = ""
        self._watch: asyncio.Task | None = None
        self._stopping = False

    async def apply(self, cfg) -> None:
        """Run conntrackd for this configuration (restart on a change; stop when not wanted)."""
        want = wanted(cfg)
        if want is None:
            self.off_reason = "off: ha.state_sync is false or no heartbeat interface"
            await self.stop()
            return
        if shutil.which(CONNTRACKD) is None:
            if self.off_reason != "conntrackd not installed":
                log.warning(
                    "L4 state sync off: conntrackd is not installed (apt install "
                    "conntrackd); established L4 flows reset on a failover"
                )
            self.off_reason = "conntrackd not installed"
            return
        self.off_reason = ""
        text = config_text(*want, run_dir=self.dir)
        if text == self.text and self.running:
            return
        await self.stop()
        files.private_dir(self.dir)
        files.write_private(self.cfg_path, text)
        self.text = text
        try:
            Path(LIBERAL).write_text("1\n")
        except OSError as e:
            log.warning("cannot set %s: %s", LIBERAL, e)
        self._stopping = False
        await self._start()
        self._watch = asyncio.get_running_loop().create_task(self._watchdog())

    @property
    def _live(self) -> asyncio.subprocess.Process | None:
        """The process while it runs."""
        proc = self.proc
        return proc if proc is not None and proc.returncode is None else None

    @property
    def running(self) -> bool:
        return self._live is not None

    async def _start(self) -> None:
        # Our previous child is gone (we stop or reap it first): its lock file is stale.
        (self.dir / "conntrackd.lock").unlink(missing_ok=True)
        (self.dir / "conntrackd.ctl").unlink(missing_ok=True)
        log_file = open(self.dir / "conntrackd.out", "ab")  # noqa: SIM115 (the process writes it after this block)
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *dies_with_us([CONNTRACKD, "-C", str(self.cfg_path)]),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
            )
        except OSError as e:
            self.last_error = f"cannot start conntrackd: {e}"
            log.error("%s", self.last_error)
            return
        finally:
            log_file.close()
        log.info(
            "conntrackd started (pid %d): L4 connection state synced with the partner",
            self.proc.pid,
        )

    async def _watchdog(self) -> None:
        while not self._stopping:
            if self.proc is None:
                await asyncio.sleep(1.0)
                await self._start()
                continue
            code = await self.proc.wait()
            if self._stopping:
                return
            self.restarts += 1
            self.last_error = f"conntrackd exited with {code}"
            log.error(
                "%s; restarting it in 1 s (see %s)", self.last_error, self.dir / "conntrackd.log"
            )
            await asyncio.sleep(1.0)
            if not self._stopping:
                await self._start()

    async def stop(self) -> None:
        self._stopping = True
        if self._watch:
            self._watch.cancel()
            self._watch = None
        proc = self._live
        if proc is not None:
            await stop_process(proc, grace=3)
        self.proc = None
        self.text = None

    def status(self) -> dict:
        live = self._live
        return {
            "running": live is not None,
            "pid": live.pid if live is not None else None,
            "restarts": self.restarts,
            "last_error": self.last_error,
            "off": self.off_reason,
        }
