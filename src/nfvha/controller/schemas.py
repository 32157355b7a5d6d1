"""The REST API's request and response bodies."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from ..store.models import Evacuation, Fault, Host, HostFailure, Instance, ReplicaSet, ServerGroup, Subscription
from .events import iso
from .placement import Policy, RecoveryMethod
from .sla import verdict

Name = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
Arg = Annotated[str, StringConstraints(max_length=4096)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


HostPath = Annotated[str, StringConstraints(min_length=2, max_length=4096, pattern=r"^/[^\x00,]*$")]


class VmCreate(Strict):
    """A VM for the qemu or libvirt driver: boot a kernel (or a disk), or adopt a libvirt domain."""

    kernel: HostPath | None = None
    initrd: HostPath | None = None
    cmdline: str = Field(default="", max_length=2048)
    disk: HostPath | None = None
    memory_mb: int = Field(default=256, ge=64, le=1048576)
    vcpus: int = Field(default=1, ge=1, le=256)
    share_host_root: bool = False
    domain: Name | None = None

    @model_validator(mode="after")
    def _boots(self) -> VmCreate:
        if self.domain and (self.kernel or self.disk or self.initrd):
            raise ValueError("give either `domain` (an existing libvirt domain) or what to boot, not both")
        if not (self.domain or self.kernel or self.disk):
            raise ValueError("give `kernel` or `disk` to boot, or `domain`")
        return self


class InstanceCreate(Strict):
    name: Name
    command: list[Arg] | None = Field(default=None, min_length=1, max_length=256)
    vm: VmCreate | None = None
    heartbeat: bool = True
    recovery: Literal["auto", "restart", "stop", "none"] = "auto"
    host: str | None = Field(default=None, max_length=255)
    server_group: str | None = Field(default=None, max_length=64, description="the id of its server group")
    owner: Literal["nfvi", "vnf"] = Field(
        default="nfvi", description="who repairs it first after a host failure: the platform (nfvi) at once, or "
                                    "the VNF layer, which gets `escalate_after` seconds before the platform acts")
    escalate_after: float = Field(default=30.0, ge=0, le=3600)

    @model_validator(mode="after")
    def _one_kind(self) -> InstanceCreate:
        if (self.command is None) == (self.vm is None):
            raise ValueError("give exactly one of `command` (process driver) and `vm` (qemu, libvirt drivers)")
        return self


class InstanceTemplate(InstanceCreate):
    """A replica set's instances: an instance's body, less its name and host."""

    name: Name = "replica"  # each replica is named `<set>-<n>`
    host: None = None


class InstanceOut(BaseModel):
    id: str
    name: str
    host: str
    command: list[str]
    vm: dict | None
    server_group: str | None
    replica_set: str | None
    owner: str
    heartbeat: bool
    heartbeat_status: str
    state: str
    recovery: str
    pid: int | None
    interval_ms: int | None
    protocol_errors: dict[str, int]
    created_at: str | None
    updated_at: str | None

    @classmethod
    def of(cls, i: Instance) -> InstanceOut:
        return cls(id=i.id, name=i.name, host=i.host, command=i.command, vm=i.vm, server_group=i.server_group,
                   replica_set=i.replica_set, owner=i.owner, heartbeat=i.heartbeat,
                   heartbeat_status=i.heartbeat_status, state=i.state, recovery=i.recovery, pid=i.pid,
                   interval_ms=i.interval_ms, protocol_errors=i.protocol_errors or {},
                   created_at=iso(i.created_at), updated_at=iso(i.updated_at))


class ActionRequest(Strict):
    """A lifecycle action. The guest is asked first (`action_notify`, revocable) and may veto
    it; `force` tells it without asking (irrevocable). `evacuate` (an instance of a fenced
    host: the VNF layer's repair, on `host` if given) starts it elsewhere now."""

    action: Literal["stop", "start", "reboot", "evacuate"]
    force: bool = False
    host: str | None = Field(default=None, max_length=255)


class FaultInject(Strict):
    kind: Literal["hang", "crash", "unhealthy"]


class Injected(BaseModel):
    """The fault's own record carries when it was injected (`fault_at`, basis `injected`)."""

    instance_id: str
    kind: str


def _ms(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round((b - a) * 1000, 1)


class FaultOut(BaseModel):
    id: str
    instance_id: str
    instance_name: str
    host: str
    reason: str
    detail: str
    corrective_action: str
    fault_at: str | None
    fault_basis: str | None = Field(description="injected: the fault injection; observed: the process exit; "
                                                "last_ok: the last healthy answer (an upper bound on detection)")
    detected_at: str
    reported_at: str
    notified_at: str | None
    recovered_at: str | None
    detection_ms: float | None
    report_ms: float | None
    notification_ms: float | None
    recovery_ms: float | None
    recovery_action: str
    recovery_state: str
    sla: dict[str, str | None]

    @classmethod
    def of(cls, f: Fault, level: str) -> FaultOut:
        detection, recovery = _ms(f.fault_at, f.detected_at), _ms(f.detected_at, f.recovered_at)
        return cls(id=f.id, instance_id=f.instance_id, instance_name=f.instance_name, host=f.host, reason=f.reason,
                   detail=f.detail, corrective_action=f.corrective_action, fault_at=iso(f.fault_at),
                   fault_basis=f.fault_basis, detected_at=iso(f.detected_at) or "",
                   reported_at=iso(f.reported_at) or "", notified_at=iso(f.notified_at),
                   recovered_at=iso(f.recovered_at), detection_ms=detection,
                   report_ms=_ms(f.detected_at, f.reported_at), notification_ms=_ms(f.detected_at, f.notified_at),
                   recovery_ms=recovery, recovery_action=f.recovery_action, recovery_state=f.recovery_state,
                   sla=verdict(level, detection, recovery))


class ServerGroupCreate(Strict):
    name: Name
    policy: Policy


class Member(BaseModel):
    id: str
    name: str
    host: str
    state: str
    updated_at: str | None


class ServerGroupOut(BaseModel):
    id: str
    name: str
    policy: str
    members: list[Member]
    created_at: str | None

    @classmethod
    def of(cls, g: ServerGroup, members: list[Instance]) -> ServerGroupOut:
        return cls(id=g.id, name=g.name, policy=g.policy, created_at=iso(g.created_at),
                   members=[Member(id=i.id, name=i.name, host=i.host, state=i.state, updated_at=iso(i.updated_at))
                            for i in members])


class SubscriptionCreate(Strict):
    url: AnyHttpUrl
    secret: str = Field(min_length=1, max_length=256)


class SubscriptionOut(BaseModel):
    id: str
    url: str
    created_at: str | None

    @classmethod
    def of(cls, s: Subscription) -> SubscriptionOut:
        return cls(id=s.id, url=s.url, created_at=iso(s.created_at))


class HostOut(BaseModel):
    name: str
    driver: str
    connected: bool
    state: str = Field(description="up | suspect | agent_down (the host runs, its agent does not) | down")
    last_seen: str | None
    probe: str | None
    segment: str
    reserved: bool
    capacity: int | None
    instances: int

    @classmethod
    def of(cls, h: Host, state: str, instances: int) -> HostOut:
        return cls(name=h.name, driver=h.driver, connected=h.connected, state=state, last_seen=iso(h.last_seen),
                   probe=h.probe, segment=h.segment, reserved=h.reserved, capacity=h.capacity, instances=instances)


class ControllerOut(BaseModel):
    url: str
    leading: bool
    leader: str | None
    token: int | None = Field(description="the fencing token (election revision) while leading")
    acting_since: str | None


class HostUpdate(Strict):
    segment: Name | None = None
    reserved: bool | None = None
    capacity: int | None = Field(default=None, ge=0, le=100_000)


class SegmentPut(Strict):
    recovery_method: RecoveryMethod


class SegmentOut(BaseModel):
    name: str
    recovery_method: str
    hosts: list[str]


class EvacuationOut(BaseModel):
    instance_id: str
    instance_name: str
    from_host: str
    to_host: str | None
    owner: str
    state: str
    escalated: bool
    started_at: str | None
    recovered_at: str | None
    error: str | None

    @classmethod
    def of(cls, e: Evacuation) -> EvacuationOut:
        return cls(instance_id=e.instance_id, instance_name=e.instance_name, from_host=e.from_host, to_host=e.to_host,
                   owner=e.owner, state=e.state, escalated=e.escalated, started_at=iso(e.started_at),
                   recovered_at=iso(e.recovered_at), error=e.error)


class HostFailureOut(BaseModel):
    id: str
    host: str
    state: str = Field(description="fencing | fence_failed | evacuating | recovered | host_returned")
    last_beat_at: str | None
    detected_at: str | None
    notified_at: str | None
    fenced_at: str | None
    recovered_at: str | None
    fence_driver: str
    fence_error: str | None
    detection_ms: float | None = Field(description="from the host's last heartbeat: an upper bound")
    notification_ms: float | None
    fence_ms: float | None
    recovery_ms: float | None = Field(description="detection → every instance running elsewhere")
    evacuations: list[EvacuationOut]

    @classmethod
    def of(cls, f: HostFailure, evacuations: list[Evacuation]) -> HostFailureOut:
        return cls(id=f.id, host=f.host, state=f.state, last_beat_at=iso(f.last_beat_at),
                   detected_at=iso(f.detected_at), notified_at=iso(f.notified_at), fenced_at=iso(f.fenced_at),
                   recovered_at=iso(f.recovered_at), fence_driver=f.fence_driver, fence_error=f.fence_error,
                   detection_ms=_ms(f.last_beat_at, f.detected_at), notification_ms=_ms(f.detected_at, f.notified_at),
                   fence_ms=_ms(f.detected_at, f.fenced_at), recovery_ms=_ms(f.detected_at, f.recovered_at),
                   evacuations=[EvacuationOut.of(e) for e in evacuations])


class ReplicaSetCreate(Strict):
    name: Annotated[str, StringConstraints(min_length=1, max_length=56, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
    replicas: int = Field(ge=0, le=1000)
    template: InstanceTemplate


class ReplicaSetUpdate(Strict):
    replicas: int = Field(ge=0, le=1000)


class ReplicaSetOut(BaseModel):
    id: str
    name: str
    replicas: int
    ready: int = Field(description="members running and, if they heartbeat, heartbeating")
    template: dict
    members: list[Member]

    @classmethod
    def of(cls, r: ReplicaSet, members: list[Instance]) -> ReplicaSetOut:
        ready = sum(1 for i in members if i.state == "running" and (not i.heartbeat
                                                                    or i.heartbeat_status == "heartbeating"))
        return cls(id=r.id, name=r.name, replicas=r.replicas, ready=ready, template=r.template,
                   members=[Member(id=i.id, name=i.name, host=i.host, state=i.state, updated_at=iso(i.updated_at))
                            for i in members])
