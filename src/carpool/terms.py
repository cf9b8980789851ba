"""The status document's vocabulary: the words the daemon writes into `carpool status` and
the WUI, /metrics and the CLI read back — typed here, so no reader matches text."""

from __future__ import annotations

from enum import StrEnum


class SyncState(StrEnum):
    """The client's state, shown in status["sync"]["state"] (DOWN as "sync down: why")."""

    IDLE = "idle"  # standby: the active unit pushes
    CONNECTING = "connecting"
    IN_SYNC = "in sync"
    DOWN = "sync down"


class Warn(StrEnum):
    """What a warning is about: status["warning_kinds"] lists them, so the WUI reads the kind,
    never the text."""

    MASTER_MASTER = "master-master"
    ADVERTS_LOST = "adverts lost"
    PATH_DROPS = "path drops"
    FOREIGN_VHID = "foreign vhid"
    WEAK_AUTH = "weak advert authentication"
    ADVERT_FORM = "older advert form"
    CERTIFICATE = "certificate"  # expired, or expiring within 30 days
