"""What the dashboard shows of the pair: each unit's icon from both units' status. Pure."""

from __future__ import annotations

from ..terms import Warn

ICONS = {  # icon -> (label, what it means)
    "active": ("Active", "holds the shared addresses and serves"),
    "standby": ("Standby", "ready to take over"),
    "pacified": (
        "Pacified",
        "restarted too often (reboot loop): stays standby until an admin "
        "runs `carpool pacify --clear`",
    ),
    "master-master": (
        "Master-master",
        "both units are active: the units cannot hear each other (check the links and the switch)",
    ),
    "not-operational": ("Not operational", "not running, not reachable or starting"),
}


def _master_master(status: dict, other: dict | None) -> bool:
    """Both active: seen in the partner's status, or the daemon's own warning (it learns the
    partner's state on the sync port even when the partner's WUI is out of reach)."""
    if other and other.get("state") == "master":
        return True
    return Warn.MASTER_MASTER in (status.get("warning_kinds") or ())


def icon(status: dict | None, other: dict | None) -> str:
    if not status or status.get("state") not in ("master", "backup"):
        return "not-operational"
    if status["state"] == "master":
        return "master-master" if _master_master(status, other) else "active"
    return "pacified" if status.get("pacified") else "standby"


def pair(own: dict, own_url: str, partner: dict) -> list[dict]:
    """Both units, first unit first: role, name (`units.<role>.name`, else the role), url,
    icon, label, the status (None if unknown)."""
    theirs = partner.get("status")
    partner_role = "second" if own["role"] == "first" else "first"
    units = [
        {
            "role": own["role"],
            "name": own.get("name") or own["role"],
            "url": own_url,
            "this": True,
            "status": own,
            "icon": icon(own, theirs),
            "error": None,
        },
        {
            "role": partner_role,
            "name": (theirs or {}).get("name") or own.get("partner_name") or partner_role,
            "url": partner["url"],
            "this": False,
            "status": theirs,
            "icon": icon(theirs, own),
            "error": partner.get("error"),
        },
    ]
    for u in units:
        u["label"], u["meaning"] = ICONS[u["icon"]]
    return sorted(units, key=lambda u: u["role"] != "first")


def active_url(units: list[dict]) -> str | None:
    """The WUI of the active unit (None if neither or both are)."""
    active = [u for u in units if u["icon"] == "active"]
    return active[0]["url"] if len(active) == 1 else None
