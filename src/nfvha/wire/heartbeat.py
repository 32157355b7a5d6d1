"""Application `heartbeat` (docs/protocol.md §Application heartbeat).

Messages are small frozen dataclasses whose field metadata is the validation table.
`HostHeartbeat` and `GuestHeartbeat` are the two ends' state machines: every rule of the
protocol (miss threshold, re-init, exit, the first challenge after registration) lives
here, driven by `receive(msg, now)` and `tick(now)`, with `next_deadline()` telling the
caller when to tick next.

Host states (one machine per channel connection):

    state         on                           ->  state          emits
    waiting       init                             heartbeating   Registered, sends init_ack + challenge
    heartbeating  init (new invocation_id)         heartbeating   Registered(reinit=True)  -- no fault
    heartbeating  healthy answer                   heartbeating   (Healthy on the first one)
    heartbeating  unhealthy answer                 faulted        Fault(unhealthy)
    heartbeating  tick with miss_threshold misses  faulted        Fault(heartbeat_timeout)
    heartbeating  channel closed                   closed         Fault(channel_lost), unless a stop is expected
    faulted       healthy answer                   heartbeating   Healthy   -- the fault has cleared
    any           exit                             exited         Exited    -- no fault, no more challenges
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .framing import ProtocolError
from .messages import Table, int_field, str_field, to_data  # noqa: F401 -- to_data: part of this API

CORRECTIVE_ACTIONS = ("reboot", "stop", "log", "none")
EVENT_TYPES = (
    "stop", "reboot", "suspend", "pause", "unpause", "resume",
    "live_migrate_begin", "live_migrate_end", "cold_migrate_begin", "cold_migrate_end",
    "resize_begin", "resize_end",
)
U32 = 2**32
MAX_INTERVAL_MS = 3_600_000
MAX_SECS = 86_400


@dataclass(frozen=True)
class Init:
    msg_type: ClassVar[str] = "init"
    direction: ClassVar[str] = "guest"
    invocation_id: str = field(metadata=str_field(64))
    name: str = field(metadata=str_field(64))
    heartbeat_interval_ms: int = field(metadata=int_field(1, MAX_INTERVAL_MS))
    corrective_action: str = field(default="reboot", metadata=str_field(16, CORRECTIVE_ACTIONS))
    vote_secs: int = field(default=10, metadata=int_field(0, MAX_SECS))
    shutdown_notice_secs: int = field(default=10, metadata=int_field(0, MAX_SECS))
    suspend_notice_secs: int = field(default=10, metadata=int_field(0, MAX_SECS))
    resume_notice_secs: int = field(default=10, metadata=int_field(0, MAX_SECS))
    restart_secs: int = field(default=60, metadata=int_field(0, MAX_SECS))


@dataclass(frozen=True)
class InitAck:
    msg_type: ClassVar[str] = "init_ack"
    direction: ClassVar[str] = "host"
    invocation_id: str = field(metadata=str_field(64))
    heartbeat_interval_ms: int = field(metadata=int_field(1, MAX_INTERVAL_MS))


@dataclass(frozen=True)
class Challenge:
    msg_type: ClassVar[str] = "challenge"
    direction: ClassVar[str] = "host"
    heartbeat_challenge: int = field(metadata=int_field(0, U32 - 1))


@dataclass(frozen=True)
class ChallengeResponse:
    msg_type: ClassVar[str] = "challenge_response"
    direction: ClassVar[str] = "guest"
    heartbeat_response: int = field(metadata=int_field(0, U32 - 1))
    heartbeat_health: str = field(metadata=str_field(16, ("healthy", "unhealthy")))
    corrective_action: str = field(default="reboot", metadata=str_field(16, CORRECTIVE_ACTIONS))
    log_msg: str = field(default="", metadata=str_field(224))


@dataclass(frozen=True)
class ActionNotify:
    msg_type: ClassVar[str] = "action_notify"
    direction: ClassVar[str] = "host"
    invocation_id: str = field(metadata=str_field(64))
    event_type: str = field(metadata=str_field(32, EVENT_TYPES))
    notification_type: str = field(metadata=str_field(16, ("revocable", "irrevocable")))
    timeout_ms: int = field(metadata=int_field(0, MAX_SECS * 1000))


@dataclass(frozen=True)
class ActionResponse:
    msg_type: ClassVar[str] = "action_response"
    direction: ClassVar[str] = "guest"
    invocation_id: str = field(metadata=str_field(64))
    event_type: str = field(metadata=str_field(32, EVENT_TYPES))
    notification_type: str = field(metadata=str_field(16, ("revocable", "irrevocable")))
    vote_result: str = field(metadata=str_field(16, ("accept", "reject", "complete", "timeout", "error")))
    log_msg: str = field(default="", metadata=str_field(224))


@dataclass(frozen=True)
class Exit:
    msg_type: ClassVar[str] = "exit"
    direction: ClassVar[str] = "guest"
    log_msg: str = field(default="", metadata=str_field(224))


@dataclass(frozen=True)
class Nack:
    msg_type: ClassVar[str] = "nack"
    direction: ClassVar[str] = "either"
    log_msg: str = field(default="", metadata=str_field(224))
    orig_msg_type: str = field(default="", metadata=str_field(64))


TABLE = Table("heartbeat", Init, InitAck, Challenge, ChallengeResponse, ActionNotify, ActionResponse, Exit, Nack)
parse = TABLE.parse


# ---- events -------------------------------------------------------------------------

@dataclass(frozen=True)
class Registered:
    init: Init
    interval_ms: int
    reinit: bool


@dataclass(frozen=True)
class Healthy:
    """The first healthy answer after registration or after a fault."""

    at: float


@dataclass(frozen=True)
class Fault:
    reason: str  # heartbeat_timeout | unhealthy | channel_lost
    detail: str
    corrective_action: str
    last_ok_at: float | None  # the last healthy answer: the fault happened after it


@dataclass(frozen=True)
class Exited:
    log_msg: str


@dataclass(frozen=True)
class ChallengeReceived:
    """Guest side: answer `value` via GuestHeartbeat.respond() after the health check."""

    value: int


@dataclass
class Step:
    send: list[Any] = field(default_factory=list)
    events: list[Any] = field(default_factory=list)


# ---- host side ----------------------------------------------------------------------

class HostHeartbeat:
    """The agent's end of one channel connection."""

    def __init__(self, *, miss_threshold: int = 2, min_interval_ms: int = 50,
                 max_interval_ms: int = 60_000, rng: random.Random | None = None) -> None:
        if miss_threshold < 1:
            raise ValueError("miss_threshold must be at least 1")
        self.miss_threshold = miss_threshold
        self.min_interval_ms = min_interval_ms
        self.max_interval_ms = max_interval_ms
        self._rng = rng or random.Random()
        self.state = "waiting"
        self.init: Init | None = None
        self.interval = 0.0
        self.misses = 0
        self.wrong_answers = 0
        self.last_ok_at: float | None = None
        self.expecting_stop = False
        self._outstanding: int | None = None
        self._answered = True
        self._healthy_seen = False
        self._next_at: float | None = None

    def receive(self, msg: Any, now: float) -> Step:
        step = Step()
        if isinstance(msg, Init):
            self._on_init(msg, now, step)
        elif isinstance(msg, ChallengeResponse):
            self._on_response(msg, now, step)
        elif isinstance(msg, Exit):
            self.state = "exited"
            self._next_at = None
            step.events.append(Exited(msg.log_msg))
        elif isinstance(msg, ActionResponse):
            step.events.append(msg)  # a vote: the agent matches it to its action_notify
        # a nack is diagnostic only
        return step

    def _on_init(self, msg: Init, now: float, step: Step) -> None:
        interval_ms = min(max(msg.heartbeat_interval_ms, self.min_interval_ms), self.max_interval_ms)
        step.send.append(InitAck(invocation_id=msg.invocation_id, heartbeat_interval_ms=interval_ms))
        if self.init is not None and self.init.invocation_id == msg.invocation_id and self.state != "exited":
            return  # a repeated init whose ack was lost: ack again, change nothing
        reinit = self.init is not None
        self.init = msg
        self.interval = interval_ms / 1000.0
        self.state = "heartbeating"
        self.misses = 0
        self.last_ok_at = None
        self._healthy_seen = False
        step.events.append(Registered(msg, interval_ms, reinit))
        self._challenge(now, step)

    def _on_response(self, msg: ChallengeResponse, now: float, step: Step) -> None:
        if self.state not in ("heartbeating", "faulted"):
            raise ProtocolError("unexpected", f"challenge_response while {self.state}", app="heartbeat",
                                msg_type=msg.msg_type)
        if self._answered or msg.heartbeat_response != self._outstanding:
            self.wrong_answers += 1  # late, duplicate or wrong: the deadline counts it as a miss
            return
        self._answered = True
        if msg.heartbeat_health == "unhealthy":
            if self.state == "heartbeating":
                self.state = "faulted"
                step.events.append(Fault("unhealthy", msg.log_msg or "guest reports unhealthy",
                                         msg.corrective_action, self.last_ok_at))
            return
        self.misses = 0
        self.last_ok_at = now
        if self.state == "faulted" or not self._healthy_seen:
            self._healthy_seen = True
            self.state = "heartbeating"
            step.events.append(Healthy(now))

    def tick(self, now: float) -> Step:
        step = Step()
        if self._next_at is None or now < self._next_at:
            return step
        if not self._answered:
            self.misses += 1
            if self.misses >= self.miss_threshold and self.state == "heartbeating" and not self.expecting_stop:
                self.state = "faulted"
                step.events.append(Fault(
                    "heartbeat_timeout",
                    f"{self.misses} challenges unanswered at {round(self.interval * 1000)} ms interval",
                    self.init.corrective_action if self.init else "reboot", self.last_ok_at))
        self._challenge(now, step)
        return step

    def _challenge(self, now: float, step: Step) -> None:
        self._outstanding = self._rng.randrange(U32)
        self._answered = False
        # keep the cadence, but never try to catch up on ticks a busy loop missed
        nxt = (self._next_at or now) + self.interval
        self._next_at = nxt if nxt > now else now + self.interval
        step.send.append(Challenge(self._outstanding))

    def closed(self, now: float) -> Step:
        step = Step()
        if self.state == "heartbeating" and not self.expecting_stop:
            step.events.append(Fault("channel_lost", "channel closed while heartbeating",
                                     self.init.corrective_action if self.init else "reboot", self.last_ok_at))
        self.state = "closed"
        self._next_at = None
        return step

    def next_deadline(self) -> float | None:
        return self._next_at

    @property
    def responsive(self) -> bool:
        """The guest answered its latest challenge (healthy or not): it reads the channel."""
        return self._answered and self.state in ("heartbeating", "faulted")


# ---- guest side ---------------------------------------------------------------------

class GuestHeartbeat:
    """The guest daemon's end: registers, re-registers, and answers challenges."""

    def __init__(self, init: Init, *, init_retry: float = 0.5, silence_intervals: int = 3) -> None:
        self.init = init
        self.init_retry = init_retry
        self.silence_intervals = silence_intervals
        self.state = "idle"
        self.interval = init.heartbeat_interval_ms / 1000.0
        self._next_init_at: float | None = None
        self._last_heard: float | None = None

    def connected(self, now: float) -> Step:
        """The host may be there now (a new connection, or the port opened): register."""
        self.state = "registering"
        self._next_init_at = now + self.init_retry
        return Step(send=[self.init])

    def receive(self, msg: Any, now: float) -> Step:
        step = Step()
        if isinstance(msg, InitAck):
            if msg.invocation_id == self.init.invocation_id and self.state == "registering":
                self.state = "registered"
                self.interval = msg.heartbeat_interval_ms / 1000.0
                self._last_heard = now
                self._next_init_at = None
        elif isinstance(msg, Challenge):
            if self.state == "registering":  # the ack was lost, but the host heartbeats us
                self.state = "registered"
                self._next_init_at = None
            if self.state == "registered":
                self._last_heard = now
                step.events.append(ChallengeReceived(msg.heartbeat_challenge))
        elif isinstance(msg, ActionNotify):
            step.events.append(msg)  # the daemon asks its application, then answers
        return step

    def respond(self, value: int, healthy: bool, log_msg: str = "") -> Step:
        return Step(send=[ChallengeResponse(
            heartbeat_response=value, heartbeat_health="healthy" if healthy else "unhealthy",
            corrective_action=self.init.corrective_action, log_msg=log_msg[:224])])

    def tick(self, now: float) -> Step:
        if self.state == "registering" and self._next_init_at is not None and now >= self._next_init_at:
            self._next_init_at = now + self.init_retry
            return Step(send=[self.init])
        deadline = self._silence_deadline()
        if deadline is not None and now >= deadline:
            return self.connected(now)  # the host went quiet (restarted?): register again
        return Step()

    def exit(self, log_msg: str = "") -> Step:
        self.state = "exited"
        return Step(send=[Exit(log_msg[:224])])

    def _silence_deadline(self) -> float | None:
        if self.state != "registered" or self._last_heard is None:
            return None
        return self._last_heard + max(self.silence_intervals * self.interval, 1.0)

    def next_deadline(self) -> float | None:
        if self.state == "registering":
            return self._next_init_at
        return self._silence_deadline()
