"""What the dashboard shows of the pair: each unit's icon from both units' status. Pure."""
from __future__ import annotations

ICONS = {  # icon -> (label, what it means)
    "active": ("Active", "holds the shared addresses and serves"),
    "standby": ("Standby", "ready to take over"),
    "pacified": ("Pacified", "standby that will not take over yet (initial wait or just "
                             "stepped down by a forced failover)"),
    "master-master": ("Master-master", "both units are active: the units cannot hear each "
                                       "other (check the links and the switch)"),
    "not-operational": ("Not operational", "not running, not reachable or starting"),
}


def _pacified(status: dict) -> bool:
    if status.get("pacified"):  # the daemon says so (forced failover hold)
        return True
    reason = (status.get("reason") or "").lower()
    if "failover" in reason or "forced" in reason:
        return True
    wait = status.get("initial_wait") or 0
    return "initial wait" in reason and (status.get("since_ago") or 0) < wait + \
        (status.get("timers") or {}).get("master_down", 0)


def icon(status: dict | None, other: dict | None) -> str:
    if not status or status.get("state") not in ("master", "backup"):
        return "not-operational"
    if status["state"] == "master":
        return "master-master" if other and other.get("state") == "master" else "active"
    return "pacified" if _pacified(status) else "standby"


def pair(own: dict, own_url: str, partner: dict) -> list[dict]:
    """Both units, first unit first: role, url, icon, label, the status (None if unknown)."""
    theirs = partner.get("status")
    units = [
        {"role": own["role"], "url": own_url, "this": True, "status": own,
         "icon": icon(own, theirs), "error": None},
        {"role": "second" if own["role"] == "first" else "first", "url": partner["url"],
         "this": False, "status": theirs, "icon": icon(theirs, own),
         "error": partner.get("error")},
    ]
    for u in units:
        u["label"], u["meaning"] = ICONS[u["icon"]]
    return sorted(units, key=lambda u: u["role"] != "first")


def active_url(units: list[dict]) -> str | None:
    """The WUI of the active unit (None if neither or both are)."""
    active = [u for u in units if u["icon"] == "active"]
    return active[0]["url"] if len(active) == 1 else None
