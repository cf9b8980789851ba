"""The election: one unit-level CARP/VRRP instance as a pure state machine (BSD CARP semantics).

Events in, effects out. No sockets, no clock reads, no asyncio: the caller passes `now` (float
seconds, any monotonic origin) and delivers a Tick when `now` reaches `deadline`.

    INIT --Start--> BACKUP --master down | partner gone | bow-out | peer more demoted
                            | preempt--> MASTER
    MASTER --peer rank beats ours (a rising demote is advertised at once: a healthier
             partner takes over and its advert makes us yield; we bow out as we go, and a
             master that hears a bow-out or a weaker master announces again)--> BACKUP
    MASTER --Relinquish (forced failover: bow out, no preempting back for `hold` s)--> BACKUP
    MASTER --Pacify(on)--> BACKUP; a pacified unit (reboot loop) never becomes MASTER
    MASTER --woke from a freeze well past master-down (the partner has taken over)--> BACKUP
    BACKUP, MASTER --Shutdown (a MASTER bows out)--> INIT

BACKUP: the deadline is master-down (silence from the master); every advert re-arms it.
MASTER: the deadline is the next advert. Entering MASTER takes the shared addresses, sends a
gratuitous ARP and an advert; the ARP is repeated with the 2nd advert after takeover.
Rank order (who should be MASTER): lower demote, then lower preference (advbase*256 + advskew,
or 255 - VRRP priority), then the higher address; an equal Rank never beats.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from ipaddress import ip_address

from .. import events

log = events.logger("carpool.election", events.Kind.TRANSITION)

GARP_REPEAT_ADVERT = 2  # resend the gratuitous ARP with this advert (the takeover advert is 1)
# A master silent this much longer than master-down was frozen, not merely late. A shorter lag
# (a busy machine: 0.1 s is common in a 20 ms profile) is left to the rank comparison, which
# settles two masters within an advert without leaving the pair with none.
STALL_MARGIN = 0.25


class State(enum.Enum):
    INIT = "init"
    BACKUP = "backup"
    MASTER = "master"


TRANSITIONS: frozenset[tuple[State, State]] = frozenset(
    {
        (State.INIT, State.BACKUP),  # Start
        # master down, partner gone (fast detector), bow-out, peer more demoted, preempt
        (State.BACKUP, State.MASTER),
        (State.BACKUP, State.INIT),  # Shutdown
        (State.MASTER, State.BACKUP),  # peer rank beats ours, our demote rose
        (State.MASTER, State.INIT),  # Shutdown (bow out)
    }
)


class TransitionError(RuntimeError):
    """A state change the table does not allow: a programming error, never a network event."""


def _ip(address: int) -> str:
    """A unit's identity as text: an IPv4 address, or on an IPv6-only pair an IPv6 one (the
    units' global addresses are never below 2**32, where IPv4 is read)."""
    return str(ip_address(address))


def _secs(value: float) -> str:
    text = f"{value:.3f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


@dataclass(frozen=True, order=False)
class Rank:
    """What an advert says about its sender."""

    demote: int  # higher loses (OpenBSD demote / our count of failed checks)
    preference: int  # lower wins: CARP advbase*256+advskew; VRRP 255-priority
    address: int  # tie-break: the higher sender IPv4 (as int) wins, like VRRP

    def beats(self, other: Rank) -> bool:
        return (-self.demote, -self.preference, self.address) > (
            -other.demote,
            -other.preference,
            other.address,
        )

    def versus(self, other: Rank) -> str:
        """The first field where self beats other, as text: 'demote 0 < 1'."""
        if self.demote != other.demote:
            return f"demote {self.demote} < {other.demote}"
        if self.preference != other.preference:
            return f"preference {self.preference} < {other.preference}"
        return f"address {_ip(self.address)} > {_ip(other.address)}"


@dataclass(frozen=True)
class Params:
    rank_preference: int
    address: int
    advert_interval: float  # s between adverts as master
    master_down: float  # s of silence before a backup takes over
    preempt: bool = False
    initial_wait: float = 0.0

    def __post_init__(self) -> None:
        if not self.advert_interval > 0 or not self.master_down > 0:
            raise ValueError("advert_interval and master_down must be > 0")
        if not self.initial_wait >= 0:
            raise ValueError("initial_wait must be >= 0")


# -- events -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Start:
    pass


@dataclass(frozen=True)
class Tick:
    pass


@dataclass(frozen=True)
class Shutdown:
    reason: str = "shutdown"


@dataclass(frozen=True)
class Relinquish:
    """An admin's forced failover: the MASTER bows out to its partner and stays BACKUP; it does
    not preempt for `hold` seconds (it still takes over if the partner falls silent)."""

    reason: str = "forced failover"
    hold: float = 300.0


@dataclass(frozen=True)
class Pacify:
    """Reboot-loop protection: while on, the unit stays BACKUP whatever happens (an admin
    clears it). Delivered before Start, it holds from the first moment."""

    on: bool
    reason: str = ""


@dataclass(frozen=True)
class AdvertReceived:
    rank: Rank
    bow_out: bool = False
    interface: str = ""


@dataclass(frozen=True)
class PartnerGone:
    """The fast detector's verdict (ha/liveness.py): the partner is down, well before
    master-down says so. A BACKUP takes over; anything else has nothing to do."""

    reason: str


@dataclass(frozen=True)
class DemoteChanged:
    reasons: tuple[str, ...]  # the full current set of failed checks


# -- effects ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class SendAdvert:
    bow_out: bool
    demote: int


@dataclass(frozen=True)
class TakeAddresses:
    # Each address announced as soon as it is up: the first waits for no other's netlink add.
    announce: bool = True
    # the partner bowed out (a planned failover): its HTTP connections are handed back to it
    handover: bool = False


@dataclass(frozen=True)
class ReleaseAddresses:
    # we bow out (a planned failover): finish our HTTP connections while the partner serves
    handover: bool = False


@dataclass(frozen=True)
class SendGarp:
    pass


@dataclass(frozen=True)
class RunNotify:
    new: State
    old: State
    reason: str


Event = Start | Tick | Shutdown | Relinquish | Pacify | AdvertReceived | DemoteChanged | PartnerGone
Effect = SendAdvert | TakeAddresses | ReleaseAddresses | SendGarp | RunNotify


class Election:
    def __init__(self, params: Params):
        self.params = params
        self._state = State.INIT
        self._since: float | None = None
        self._reason = "not started"
        self._demote: tuple[str, ...] = ()
        self._deadline: float | None = None
        self._silent_since = 0.0  # BACKUP: last advert heard (or entry into BACKUP)
        self._adverts = 0  # MASTER: adverts sent since takeover
        self._announce_again = False  # MASTER: a gratuitous ARP with the next advert
        self._no_preempt_until = float("-inf")  # after a Relinquish
        self._pacified = ""  # why, while pacified

    @property
    def state(self) -> State:
        return self._state

    @property
    def since(self) -> float | None:
        """`now` of the last state change."""
        return self._since

    @property
    def reason(self) -> str:
        """Why the last state change happened."""
        return self._reason

    @property
    def demote_reasons(self) -> tuple[str, ...]:
        return self._demote

    @property
    def pacified(self) -> str:
        """Why the unit is pacified, or ''."""
        return self._pacified

    @property
    def deadline(self) -> float | None:
        """When to deliver the next Tick, or None."""
        return self._deadline

    @property
    def demote(self) -> int:
        return len(self._demote)

    @property
    def rank(self) -> Rank:
        return Rank(self.demote, self.params.rank_preference, self.params.address)

    def handle(self, event: Event, now: float) -> list[Effect]:
        stalled = (
            self._stalled(now) if isinstance(event, (Tick, AdvertReceived, DemoteChanged)) else None
        )
        if stalled is not None:
            # Yield first, then take the event as the BACKUP we now are (an advert re-arms
            # master-down, a bow-out still hands us the addresses).
            effects = self._become_backup(self._stall_reason(stalled), now)
            return effects + ([] if isinstance(event, Tick) else self._handle(event, now))
        return self._handle(event, now)

    def _handle(self, event: Event, now: float) -> list[Effect]:
        match event:
            case Start():
                return self._start(now)
            case DemoteChanged(reasons=reasons):
                return self._demote_changed(tuple(reasons), now)
            case Pacify(on=on, reason=reason):
                return self._pacify(on, reason, now)
            case Tick() | Shutdown() | Relinquish() | AdvertReceived() | PartnerGone() if (
                self._state is State.INIT
            ):
                return []  # stopped (or not yet started): only Start wakes us
            case PartnerGone(reason=reason):
                if self._state is not State.BACKUP:
                    return []
                return self._become_master(f"partner gone: {reason}", now)
            case Tick():
                return self._tick(now)
            case AdvertReceived():
                return self._advert_received(event, now)
            case Shutdown(reason=reason):
                return self._shutdown(reason, now)
            case Relinquish(reason=reason, hold=hold):
                return self._relinquish(reason, hold, now)
        raise TypeError(f"not an election event: {event!r}")

    # -- handlers -----------------------------------------------------------------------------
    def stall_limit(self) -> float:
        """Silence after which a waking MASTER yields (see _stalled)."""
        p = self.params
        return p.master_down + max(2 * p.advert_interval, STALL_MARGIN)

    def _stalled(self, now: float) -> float | None:
        """A MASTER whose last advert went out well past master-down ago was frozen (SIGSTOP,
        a hung loop): the partner has heard nothing for that long and has taken over, so
        advertising on waking would take the addresses back or duplicate them. The last
        advert left at deadline - advert_interval. The seconds since then when stalled, else
        None."""
        if self._state is not State.MASTER or self._deadline is None:
            return None
        silent = now - (self._deadline - self.params.advert_interval)
        return silent if silent > self.stall_limit() else None

    def _stall_reason(self, silent: float) -> str:
        return (
            f"woke after {_secs(silent)} s without advertising (master-down is "
            f"{_secs(self.params.master_down)} s): the partner may hold the addresses"
        )

    def _start(self, now: float) -> list[Effect]:
        if self._state is not State.INIT:
            return []
        wait = self.params.initial_wait + self.params.master_down
        reason = f"started: listening for a master for {_secs(wait)} s"
        if self.params.initial_wait:
            reason += f" (initial wait {_secs(self.params.initial_wait)} s)"
        notify = self._transition(State.BACKUP, reason, now)
        self._silent_since, self._deadline = now, now + wait
        return notify

    def _tick(self, now: float) -> list[Effect]:
        if self._deadline is None or now < self._deadline:
            return []
        if self._state is State.BACKUP:
            silence = now - self._silent_since
            return self._become_master(f"master down: no advert for {_secs(silence)} s", now)
        return self._advertise(now)

    def _advert_received(self, advert: AdvertReceived, now: float) -> list[Effect]:
        peer, ours = advert.rank, self.rank
        where = f" on {advert.interface}" if advert.interface else ""
        if self._state is State.MASTER:
            if not advert.bow_out and peer.beats(ours):
                why = peer.versus(ours)
                if peer.demote < ours.demote:
                    why += ": " + ", ".join(self._demote)
                reason = f"{_ip(peer.address)} beats us ({why}){where}"
                # Two masters (a split healing): the clients may send to us, and the winner
                # may never hear an advert of ours (we stop sending), so we say we leave.
                return self._bow_out(reason, now)
            # A weaker peer yields when it hears our next advert, a bow-out says it left. It
            # was a master too (a backup is silent): its gratuitous ARPs may have pointed the
            # clients at it, so announce again, or they keep sending to a unit that drops
            # the addresses. Its own repeat (with its second advert) may still be on its way
            # and reach the clients after ours: announce once more with our next advert.
            self._announce_again = True
            return [SendGarp()]
        if advert.bow_out:
            return self._become_master(f"{_ip(peer.address)} bowed out{where}", now, True)
        if peer.demote > ours.demote:
            return self._become_master(
                f"{_ip(peer.address)} is more demoted than us "
                f"(demote {peer.demote} > {ours.demote}){where}",
                now,
            )
        if self.params.preempt and ours.beats(peer) and now >= self._no_preempt_until:
            return self._become_master(
                f"preempting: our rank beats {_ip(peer.address)} ({ours.versus(peer)}){where}", now
            )
        self._silent_since, self._deadline = now, now + self.params.master_down
        return []

    def _demote_changed(self, reasons: tuple[str, ...], now: float) -> list[Effect]:
        old, self._demote = self._demote, reasons
        if old != reasons:
            log.info("demote %d -> %d: %s", len(old), len(reasons), ", ".join(reasons) or "none")
        if self._state is State.MASTER and len(reasons) > len(old):
            # Hand over rather than bow out: advertise the higher demote now; a healthier
            # partner takes over at once and its advert makes us yield. A partner as demoted
            # as we are (a cut heartbeat cable is down on both ends) or a dead one takes
            # nothing, so the addresses stay served instead of nobody holding them.
            self._deadline = now + self.params.advert_interval
            return [SendAdvert(bow_out=False, demote=self.demote)]
        return []  # a BACKUP's demote travels in its adverts once it is MASTER; nothing to do

    def _shutdown(self, reason: str, now: float) -> list[Effect]:
        bow_out = self._state is State.MASTER
        notify = self._transition(State.INIT, f"{reason}: bowed out" if bow_out else reason, now)
        self._deadline = None
        if bow_out:
            return [SendAdvert(bow_out=True, demote=self.demote), ReleaseAddresses(True), *notify]
        return notify

    def _pacify(self, on: bool, reason: str, now: float) -> list[Effect]:
        was, self._pacified = self._pacified, (reason or "pacified") if on else ""
        if on and not was:
            log.warning("pacified: %s", self._pacified)
        elif was and not on:
            log.warning("pacified no more (%s)", reason or "cleared")
        if on and self._state is State.MASTER:
            self._no_preempt_until = float("-inf")
            return self._bow_out(f"pacified ({self._pacified}): bowed out", now)
        return []

    def _relinquish(self, reason: str, hold: float, now: float) -> list[Effect]:
        if self._state is not State.MASTER:
            return []
        self._no_preempt_until = now + hold
        return self._bow_out(f"{reason}: bowed out to the partner", now, True)

    # -- entering states ----------------------------------------------------------------------
    def _become_master(self, reason: str, now: float, handover: bool = False) -> list[Effect]:
        if self._pacified:  # stay BACKUP; keep listening (master-down re-armed)
            if self._reason != f"pacified ({self._pacified}): not taking over":
                log.warning("would take over (%s) but pacified: %s", reason, self._pacified)
            self._reason = f"pacified ({self._pacified}): not taking over"
            self._silent_since, self._deadline = now, now + self.params.master_down
            return []
        notify = self._transition(State.MASTER, reason, now)
        self._adverts, self._announce_again = 0, False
        return [TakeAddresses(True, handover), *self._advertise(now), *notify]

    def _bow_out(self, reason: str, now: float, handover: bool = False) -> list[Effect]:
        """MASTER -> BACKUP, saying so first: the partner acts on the bow-out at once."""
        return [
            SendAdvert(bow_out=True, demote=self.demote),
            *self._become_backup(reason, now, handover),
        ]

    def _become_backup(self, reason: str, now: float, handover: bool = False) -> list[Effect]:
        notify = self._transition(State.BACKUP, reason, now)
        self._silent_since, self._deadline = now, now + self.params.master_down
        return [ReleaseAddresses(handover), *notify]

    def _advertise(self, now: float) -> list[Effect]:
        self._adverts += 1
        self._deadline = now + self.params.advert_interval
        effects: list[Effect] = [SendAdvert(bow_out=False, demote=self.demote)]
        if self._adverts == GARP_REPEAT_ADVERT or self._announce_again:
            self._announce_again = False
            effects.append(SendGarp())
        return effects

    def _transition(self, new: State, reason: str, now: float) -> list[Effect]:
        """The one place the state changes: checked against TRANSITIONS, logged, notified."""
        old = self._state
        if (old, new) not in TRANSITIONS:
            raise TransitionError(f"{old.value} -> {new.value} is not allowed ({reason})")
        log.info("%s -> %s (%s)", old.value, new.value, reason)
        self._state, self._since, self._reason = new, now, reason
        return [RunNotify(new=new, old=old, reason=reason)]
