"""Messages between agents and the controller, JSON over one WebSocket per agent (/v1/agent).

Agent → controller: hello, the host's heartbeat (`beat`, every 100 ms), fault and recovered
reports (acked once stored, re-sent until then; ids make them idempotent), instance state,
command results.
Controller → agent: welcome (the instances this host should run), commands, acks.
Times are the sender's monotonic clock; `sent_mono` lets the receiver map them onto its own.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, TypeAdapter


class VmSpec(BaseModel):
    """A virtual machine, for the qemu and libvirt drivers (see nfvha.virt.image for one)."""

    kernel: str | None = None
    initrd: str | None = None
    cmdline: str = ""
    disk: str | None = None
    memory_mb: int = 256
    vcpus: int = 1
    share_host_root: bool = False  # the host's / read-only over virtio-9p, tag `hostroot`
    domain: str | None = None  # libvirt: an existing domain, defined by the operator


class InstanceSpec(BaseModel):
    id: str
    name: str
    command: list[str] = []
    vm: VmSpec | None = None
    heartbeat: bool = True


class InstanceStatus(BaseModel):
    id: str
    state: str  # starting | running | stopped | exited | failed
    heartbeat: str  # disabled | connecting | waiting | heartbeating | faulted | exited | stopped
    pid: int | None = None
    interval_ms: int | None = None
    protocol_errors: dict[str, int] = {}


class Hello(BaseModel):
    type: Literal["hello"] = "hello"
    host: str
    driver: str
    instances: list[InstanceStatus]
    discovered: dict[str, bool] = {}  # libvirt domains marked as nfvha instances: name → heartbeat
    probe: str | None = None  # HOST:PORT where this host's `nfvha hostmon` answers, on a second network
    capacity: int | None = None  # instances this host can run, if the agent was told


class HostBeat(BaseModel):
    """The agent is alive (sent every `beat_interval`); any other message counts as one too."""

    type: Literal["beat"] = "beat"


class Welcome(BaseModel):
    type: Literal["welcome"] = "welcome"
    instances: list[InstanceSpec]


class FaultReport(BaseModel):
    type: Literal["fault"] = "fault"
    id: str
    instance_id: str
    reason: Literal["heartbeat_timeout", "unhealthy", "channel_lost", "instance_exit"]
    detail: str
    corrective_action: str
    fault_mono: float | None  # when it happened, if known
    fault_basis: Literal["injected", "observed", "last_ok"] | None
    detected_mono: float
    sent_mono: float = 0.0


class RecoveredReport(BaseModel):
    type: Literal["recovered"] = "recovered"
    id: str
    instance_id: str
    fault_id: str
    at_mono: float
    sent_mono: float = 0.0


class StateReport(BaseModel):
    type: Literal["state"] = "state"
    instance: InstanceStatus


class Command(BaseModel):
    type: Literal["command"] = "command"
    id: str
    op: Literal["ensure", "remove", "restart", "stop", "start", "inject"]
    instance_id: str
    spec: InstanceSpec | None = None
    kind: Literal["hang", "crash", "unhealthy"] | None = None
    graceful: bool = True
    vote: bool = False  # stop/restart: ask the guest first (revocable); a reject refuses the command
    notice: bool = False  # stop/restart: tell the guest, without asking (irrevocable)


class Result(BaseModel):
    type: Literal["result"] = "result"
    id: str
    ok: bool
    error: str | None = None
    data: dict = {}


class Ack(BaseModel):
    type: Literal["ack"] = "ack"
    id: str


class GroupMessage(BaseModel):
    """What a guest sent in app `server_group` (already checked by its agent): best effort."""

    type: Literal["group"] = "group"
    instance_id: str
    data: dict


class Delivery(BaseModel):
    instance_id: str
    data: dict  # a `server_group` message for the instance's guest


class Deliver(BaseModel):
    """Server-group messages for guests of this host, best effort."""

    type: Literal["deliver"] = "deliver"
    items: list[Delivery]


FromAgent = TypeAdapter(Annotated[Hello | HostBeat | FaultReport | RecoveredReport | StateReport | Result
                                  | GroupMessage, Field(discriminator="type")])
ToAgent = TypeAdapter(Annotated[Welcome | Command | Ack | Deliver, Field(discriminator="type")])
