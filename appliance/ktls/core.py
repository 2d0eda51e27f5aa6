"""The kTLS supervisor's decisions, sans-IO: events in, actions out, an explicit state.

:class:`SupervisorCore` knows no sockets, netlink or clock.  Its driver
(:mod:`appliance.ktls.supervisor`) tells it that the kernel reported the link dead, that
a connection attempt failed or produced a session, and how handing that session to the
kernel went -- each with the time ``now`` -- and carries out what it answers: start an
attempt (:class:`Connect`), give the session to the kernel (:class:`Reconfigure`), or close
it unused (:class:`Discard`).  :meth:`SupervisorCore.wakeup` says when the driver must call
:meth:`SupervisorCore.tick` next, so waiting is the driver's ``poll`` timeout, not a sleep.

States (:class:`State`)::

    ATTACHED --link dead--> CONNECTING --failed--> WAITING --backoff over--> CONNECTING
        ^                       |                     ^
        |                    session                  |  size or flags changed: Discard,
        |                       v                     |  wait the backoff's maximum
        +--handed over---- HANDING_OVER --refused-----+
        +--not taken, no dead socket: Discard ---------+

Every socket death looks the same from here: the driver's read or send failed (the server
closed or reset, the network went, a TLS record the driver cannot read -- an alert, a
KeyUpdate, a NewSessionTicket -- arrived) or a request outlived the request timeout; the
kernel marks the socket dead, shuts it down (our descriptor of it hangs up) and
multicasts NBD_CMD_LINK_DEAD.  Its
in-flight requests are requeued when their timeout fires and then wait (up to the dead
connection timeout) for the socket this core arranges; nothing is failed here.

Attempts back off by the one policy (:class:`~appliance.relay.policy.ReconnectPolicy`,
i.e. :class:`~appliance.backoff.Backoff`) and go on for ever: ``retry.deadline`` is the
kernel's dead connection timeout (requests fail with EIO after it), not a reason to stop
trying.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

from appliance.relay.policy import ReconnectPolicy

log = logging.getLogger(__name__)


class State(enum.Enum):
    """Where the supervisor stands with the kernel's socket."""

    ATTACHED = "attached"          # the kernel has a live socket
    CONNECTING = "connecting"      # an attempt is under way
    WAITING = "waiting"            # the last attempt failed; the next after the backoff
    HANDING_OVER = "handing over"  # a session is ready; NBD_CMD_RECONFIGURE under way
    STOPPED = "stopped"


@dataclass(frozen=True)
class Connect:
    """Make one attempt: connect, negotiate, check the offload; report how it went."""


@dataclass(frozen=True)
class Reconfigure:
    """Hand the session just reported to the kernel (NBD_CMD_RECONFIGURE)."""


@dataclass(frozen=True)
class Discard:
    """Close the session just reported without using it."""

    reason: str


Action = Connect | Reconfigure | Discard


@dataclass(frozen=True)
class Export:
    """What the kernel was told at CONNECT; a new session must match it."""

    size: int
    flags: int


@dataclass
class Counters:
    """For the status line and the tests."""

    deaths: int = 0
    attempts: int = 0
    handovers: int = 0
    stale: int = 0  # reports or handovers with no dead socket behind them


class SupervisorCore:
    """Decides when to reconnect and whether a new session may replace the dead one."""

    def __init__(self, export: Export, policy: ReconnectPolicy) -> None:
        self.export = export
        self.policy = policy
        self.state = State.ATTACHED
        self.counters = Counters()
        self.last_error = ""
        self._failures = 0            # consecutive failed attempts in this outage
        self._retry_at: float | None = None
        self._outage_since: float | None = None

    def _move(self, state: State) -> None:
        if state is not self.state:
            log.debug("supervisor: %s -> %s", self.state.value, state.value)
            self.state = state

    def outage(self, now: float) -> float:
        """Seconds since the kernel lost its socket (0 while attached)."""
        return 0.0 if self._outage_since is None else now - self._outage_since

    def wakeup(self, now: float) -> float | None:
        """Seconds until :meth:`tick` has something to do (None: only an event will)."""
        if self.state is State.WAITING and self._retry_at is not None:
            return max(0.0, self._retry_at - now)
        return None

    def link_dead(self, now: float, *, confirmed: bool = True) -> list[Action]:
        """The kernel's socket died: our descriptor of it hung up (``confirmed``), or
        NBD_CMD_LINK_DEAD named the device while it had not (yet): a report about a
        socket already replaced, ignored -- a real death always hangs the socket up,
        since the driver shuts down every socket it marks dead."""
        if self.state is not State.ATTACHED:
            return []  # already bringing it back
        if not confirmed:
            self.counters.stale += 1
            log.info("a link-dead report, but the kernel's socket is up; waiting for it "
                     "to hang up")
            return []
        self.counters.deaths += 1
        self._outage_since, self._failures = now, 0
        log.warning("the kernel's socket is dead; reconnecting")
        return self._connect()

    def _connect(self) -> list[Action]:
        self.counters.attempts += 1
        self._retry_at = None
        self._move(State.CONNECTING)
        return [Connect()]

    def attempt_failed(self, now: float, error: str) -> list[Action]:
        """The attempt could not connect, negotiate or offload (``error`` says why)."""
        if self.state is not State.CONNECTING:
            return []
        pause = self.policy.delay(self._failures)
        if error != self.last_error or self._failures < 3:
            log.info("reconnect attempt %d failed: %s; next in %.1f s",
                     self._failures + 1, error, pause)
        self.last_error = error
        self._failures += 1
        self._wait(now, pause)
        return []

    def _wait(self, now: float, pause: float) -> None:
        self._retry_at = now + pause
        self._move(State.WAITING)

    def session_ready(self, now: float, size: int, flags: int) -> list[Action]:
        """The attempt produced an offloaded session for an export of ``size`` bytes."""
        if self.state is not State.CONNECTING:
            return [Discard(f"not wanted while {self.state.value}")]
        if size != self.export.size or flags != self.export.flags:
            why = (f"the export changed (size {size}, flags {flags:#x}; the kernel has "
                   f"{self.export.size}, {self.export.flags:#x})")
            log.error("refusing the new connection: %s", why)
            self.last_error = why
            self._failures += 1
            self._wait(now, self.policy.maximum)
            return [Discard(why)]
        self._move(State.HANDING_OVER)
        return [Reconfigure()]

    def handed_over(self, now: float) -> list[Action]:
        """The kernel took the session (RECONFIGURE succeeded)."""
        if self.state is not State.HANDING_OVER:
            return []
        self.counters.handovers += 1
        log.warning("the kernel has a new socket after %.1f s and %d failed attempts",
                    self.outage(now), self._failures)
        self._attached()
        return []

    def _attached(self) -> None:
        self._outage_since, self._retry_at, self._failures = None, None, 0
        self.last_error = ""
        self._move(State.ATTACHED)

    def handover_refused(self, now: float, error: str, *, nothing_dead: bool) -> list[Action]:
        """RECONFIGURE failed, or (``nothing_dead``) succeeded without the driver taking
        the socket: it had no dead one to replace (nbd_genl_reconfigure answers 0 then)."""
        if self.state is not State.HANDING_OVER:
            return []
        if nothing_dead:
            self.counters.stale += 1
            log.info("the kernel's socket is alive after all; keeping it")
            self._attached()
            return [Discard("the kernel's socket is alive")]
        log.error("the kernel refused the new socket: %s", error)
        self.last_error = error
        pause = self.policy.delay(self._failures)
        self._failures += 1
        self._wait(now, pause)
        return [Discard(error)]

    def tick(self, now: float) -> list[Action]:
        """Time passed: start the next attempt once the backoff is over."""
        if self.state is State.WAITING and self._retry_at is not None and now >= self._retry_at:
            return self._connect()
        return []

    def stop(self) -> None:
        self._move(State.STOPPED)
