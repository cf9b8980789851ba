"""An operator's commands to the election (control socket, REST, WUI): a forced failover and
the reboot-loop mark. Each answers a dict: the result, or {"error": why}."""

from __future__ import annotations

from collections.abc import Callable

from .. import events
from ..ha import election as el
from .driver import ElectionDriver
from .pacify import StartRecord
from .paths import Paths

log = events.logger("carpool.daemon", events.Kind.DAEMON)
MAX_HOLD = 86400.0


class Commands:
    def __init__(
        self,
        driver: ElectionDriver,
        paths: Paths,
        starts: StartRecord,
        partner_address: Callable[[], str],
    ):
        self.driver, self.paths, self.starts = driver, paths, starts
        self.partner_address = partner_address

    def failover(self, request: dict | None = None) -> dict:
        """A graceful switch asked by an admin: only the active unit, only when the partner is
        heard (else nobody would serve); the partner takes over on our bow-out advert."""
        request = request or {}
        who = str(request.get("who") or "admin")
        try:
            hold = float(request.get("hold", 300.0))
        except (TypeError, ValueError):
            return {"error": f"hold: not a number of seconds: {request.get('hold')!r}"}
        if not 0 <= hold <= MAX_HOLD:
            return {"error": f"hold: {hold:g} s is not within 0..{MAX_HOLD:g}"}
        e = self.driver.election
        if e.state is not el.State.MASTER:
            return {
                "error": f"this unit is {e.state.value}, not active: force "
                f"failover on the active unit ({self.partner_address()})"
            }
        # A BACKUP does not advertise, so the partner's echo replies say it is there.
        heard = [name for name, st in self.paths.items() if st.ping_ok]
        if not heard:
            return {
                "error": "the partner answers no ping on any interface: a failover now "
                "could leave nobody serving; check the partner first"
            }
        log.warning("forced failover asked by %s (no preempting back for %g s)", who, hold)
        self.driver.feed(el.Relinquish(f"forced failover by {who}", hold))
        return {
            "state": e.state.value,
            "reason": e.reason,
            "hold": hold,
            "partner_answers_on": heard,
        }

    def pacify(self, request: dict | None = None) -> dict:
        """`carpool pacify [--clear]`: show or clear the reboot-loop mark."""
        request = request or {}
        e = self.driver.election
        if request.get("clear"):
            was = e.pacified
            self.starts.clear()
            self.driver.feed(el.Pacify(False, f"cleared by {request.get('who') or 'admin'}"))
            return {"pacified": "", "was": was}
        return {"pacified": e.pacified}
