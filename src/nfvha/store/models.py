"""Tables. Times are epoch seconds (float) derived from the controller's monotonic clock
(nfvha.clock), so that differences between them are monotonic durations."""

from __future__ import annotations

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Host(Base):
    __tablename__ = "hosts"
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    driver: Mapped[str] = mapped_column(String(32), default="process")
    connected: Mapped[bool] = mapped_column(Boolean, default=False)
    last_seen: Mapped[float] = mapped_column(Float, default=0.0)
    state: Mapped[str] = mapped_column(String(16), default="up")  # up | suspect | agent_down | down
    probe: Mapped[str | None] = mapped_column(String(255), nullable=True)  # its hostmon, on a second network
    capacity: Mapped[int | None] = mapped_column(Integer, nullable=True)  # None: no limit
    segment: Mapped[str] = mapped_column(String(64), default="default")
    reserved: Mapped[bool] = mapped_column(Boolean, default=False)  # kept free for evacuations


class Leadership(Base):
    """The fencing token: the election revision of the controller that leads. A leader's every
    transaction checks that it still holds it, so a deposed leader's late write is refused."""

    __tablename__ = "leadership"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)  # always 1
    token: Mapped[int] = mapped_column(Integer)
    holder: Mapped[str] = mapped_column(String(255))
    since: Mapped[float] = mapped_column(Float)


class Segment(Base):
    """A failover segment (masakari's): hosts that take over each other's instances, and how."""

    __tablename__ = "segments"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    recovery_method: Mapped[str] = mapped_column(String(16))  # auto | reserved_host | auto_priority | rh_priority


class HostFailure(Base):
    """One host failure: one correlated event, with its instances' evacuations attached."""

    __tablename__ = "host_failures"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    host: Mapped[str] = mapped_column(String(255), index=True)
    # fencing | fence_failed | evacuating | recovered | host_returned
    state: Mapped[str] = mapped_column(String(16), index=True)
    last_beat_at: Mapped[float] = mapped_column(Float)  # the last sign of life: when it happened, at the latest
    detected_at: Mapped[float] = mapped_column(Float)
    notified_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    fence_driver: Mapped[str] = mapped_column(String(32))
    fence_attempts: Mapped[int] = mapped_column(Integer, default=0)
    fence_error: Mapped[str | None] = mapped_column(String(512), nullable=True)
    fenced_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    recovered_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class Evacuation(Base):
    __tablename__ = "evacuations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    failure_id: Mapped[str] = mapped_column(ForeignKey("host_failures.id"), index=True)
    instance_id: Mapped[str] = mapped_column(String(64), index=True)
    instance_name: Mapped[str] = mapped_column(String(64))
    from_host: Mapped[str] = mapped_column(String(255))
    to_host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    owner: Mapped[str] = mapped_column(String(8))
    # waiting (fencing) | pending | starting | done | cancelled | failed
    state: Mapped[str] = mapped_column(String(16), index=True)
    not_before: Mapped[float | None] = mapped_column(Float, nullable=True)  # the VNF layer's turn until then
    requested: Mapped[bool] = mapped_column(Boolean, default=False)  # by the VNF layer (the evacuate action)
    escalated: Mapped[bool] = mapped_column(Boolean, default=False)  # the VNF layer's time ran out
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    recovered_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    error: Mapped[str | None] = mapped_column(String(512), nullable=True)


class ReplicaSet(Base):
    """A desired number of identical instances (`<name>-<n>`), kept by a reconciler."""

    __tablename__ = "replica_sets"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    replicas: Mapped[int] = mapped_column(Integer)
    template: Mapped[dict] = mapped_column(JSON)  # an instance's create body, less its name
    created_at: Mapped[float] = mapped_column(Float)


class ServerGroup(Base):
    __tablename__ = "server_groups"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    policy: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[float] = mapped_column(Float)


class Instance(Base):
    __tablename__ = "instances"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), index=True)
    host: Mapped[str] = mapped_column(String(255), index=True)
    command: Mapped[list] = mapped_column(JSON)
    vm: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    server_group: Mapped[str | None] = mapped_column(ForeignKey("server_groups.id"), nullable=True, index=True)
    replica_set: Mapped[str | None] = mapped_column(ForeignKey("replica_sets.id"), nullable=True, index=True)
    owner: Mapped[str] = mapped_column(String(8), default="nfvi")  # who repairs it after a host failure first
    escalate_after: Mapped[float] = mapped_column(Float, default=0.0)  # owner vnf: the NFVI acts after this
    heartbeat: Mapped[bool] = mapped_column(Boolean, default=True)
    recovery: Mapped[str] = mapped_column(String(16), default="auto")
    state: Mapped[str] = mapped_column(String(16), default="creating")
    heartbeat_status: Mapped[str] = mapped_column(String(16), default="disabled")
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    interval_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    protocol_errors: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class Fault(Base):
    __tablename__ = "faults"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the agent's report id: idempotent
    instance_id: Mapped[str] = mapped_column(String(64), index=True)
    instance_name: Mapped[str] = mapped_column(String(64))
    host: Mapped[str] = mapped_column(String(255))
    reason: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(String(512))
    corrective_action: Mapped[str] = mapped_column(String(16))
    fault_basis: Mapped[str | None] = mapped_column(String(16), nullable=True)
    fault_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    detected_at: Mapped[float] = mapped_column(Float, index=True)
    reported_at: Mapped[float] = mapped_column(Float)
    notified_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    recovered_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    recovery_action: Mapped[str] = mapped_column(String(16))  # restart | stop | none
    recovery_state: Mapped[str] = mapped_column(String(16))  # pending | acting | done | failed | none
    recovery_attempts: Mapped[int] = mapped_column(Integer, default=0)
    recovery_started_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class Subscription(Base):
    __tablename__ = "subscriptions"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    url: Mapped[str] = mapped_column(String(2048))
    secret: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[float] = mapped_column(Float)


class Event(Base):
    """The outbox: an event and its exact body, committed with the change it announces."""

    __tablename__ = "events"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    type: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(64))
    fault_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    time: Mapped[float] = mapped_column(Float)
    body: Mapped[str] = mapped_column(Text)


class Delivery(Base):
    __tablename__ = "deliveries"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), index=True)
    subscription_id: Mapped[str] = mapped_column(ForeignKey("subscriptions.id", ondelete="CASCADE"), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[float] = mapped_column(Float)
    delivered_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    failed: Mapped[bool] = mapped_column(Boolean, default=False)
    last_error: Mapped[str | None] = mapped_column(String(512), nullable=True)
