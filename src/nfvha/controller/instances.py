"""Creating and deleting instances, for the API and the reconcilers alike."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import TYPE_CHECKING

from sqlalchemy import select

from .. import clock
from ..control import Command, InstanceStatus
from ..store.models import Host, Instance, ServerGroup
from .agents import AgentUnavailableError
from .groups import peer_view
from .inventory import spec
from .placement import PlacementError, choose_host
from .schemas import InstanceCreate

if TYPE_CHECKING:
    from .service import Controller


class RefusedError(Exception):
    """A request that changes nothing; `status` is its HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def host_loads(s) -> tuple[dict[str, Host], Counter[str]]:
    """Every host, and how many instances each runs."""
    hosts = {h.name: h for h in (await s.scalars(select(Host))).all()}
    return hosts, Counter((await s.scalars(select(Instance.host))).all())


def has_room(host: Host, load: int) -> bool:
    return host.capacity is None or load < host.capacity


async def members(s, group_id: str | None, but: str | None = None) -> tuple[str | None, list[str]]:
    """The group's policy and its members' hosts (one entry per member), leaving out `but`."""
    if group_id is None:
        return None, []
    group = await s.get(ServerGroup, group_id)
    if group is None:
        raise RefusedError(422, f"server_group: no server group with id {group_id}")
    rows = (await s.execute(select(Instance.id, Instance.host).where(Instance.server_group == group_id))).all()
    return group.policy, [h for iid, h in rows if iid != but]


async def place(ctl: Controller, s, body: InstanceCreate) -> str:
    """The host for a new instance: named, or chosen under its server group's policy among the
    up, unreserved hosts with room, least loaded first."""
    policy, member_hosts = await members(s, body.server_group)
    hosts, load = await host_loads(s)
    usable = [h for h in ctl.hub.hosts() if ctl.hosts.state(h) == "up" and h in hosts
              and not hosts[h].reserved and has_room(hosts[h], load[h])]
    if body.host in hosts and body.host not in usable and ctl.hub.connected(body.host):
        h = hosts[body.host]
        why = "reserved for evacuations" if h.reserved else "full" if not has_room(h, load[h.name]) else \
            ctl.hosts.state(h.name)
        raise RefusedError(409, f"host: '{h.name}' takes no new instances: it is {why}")
    try:
        return choose_host(usable, member_hosts, policy, body.host, load)
    except PlacementError as exc:
        status = 503 if not ctl.hub.hosts() else 422 if str(exc).startswith("host:") else 409
        raise RefusedError(status, str(exc)) from None


async def create(ctl: Controller, body: InstanceCreate, replica_set: str | None = None) -> str:
    """Place, store and start an instance; its id. On a refusal nothing is left behind."""
    now = clock.now()
    # one placement at a time: two members of an anti-affinity group must not both take a host
    async with ctl.placement_lock, ctl.sessions() as s, s.begin():
        if await s.scalar(select(Instance.id).where(Instance.name == body.name)):
            raise RefusedError(409, f"name: an instance named '{body.name}' exists")
        host = await place(ctl, s, body)
        inst = Instance(id=str(uuid.uuid4()), name=body.name, host=host, command=body.command or [],
                        vm=body.vm.model_dump(exclude_none=True) if body.vm else None,
                        server_group=body.server_group, replica_set=replica_set, heartbeat=body.heartbeat,
                        recovery=body.recovery, owner=body.owner, escalate_after=body.escalate_after,
                        state="creating", heartbeat_status="disabled", protocol_errors={}, created_at=now,
                        updated_at=now)
        s.add(inst)
    ctl.groups.invalidate()
    try:
        result = await ctl.hub.call(host, Command(id="", op="ensure", instance_id=inst.id, spec=spec(inst)))
        failure = None if result.ok else RefusedError(422, f"command: {result.error}")
    except AgentUnavailableError as exc:
        failure = RefusedError(503, str(exc))
    if failure is not None:
        async with ctl.sessions() as s, s.begin():
            await s.delete(await s.get(Instance, inst.id))
        ctl.groups.invalidate()
        raise failure
    await ctl.inventory.update(host, InstanceStatus.model_validate(result.data))
    return inst.id


async def delete(ctl: Controller, instance_id: str) -> bool:
    """Stop and forget an instance; whether it existed."""
    async with ctl.sessions() as s:
        inst = await s.get(Instance, instance_id)
    if inst is None:
        return False
    try:
        await ctl.hub.call(inst.host, Command(id="", op="remove", instance_id=instance_id))
    except AgentUnavailableError:
        pass  # its agent drops it when it next connects: the welcome no longer lists it
    async with ctl.sessions() as s, s.begin():
        inst = await s.get(Instance, instance_id)
        if inst is not None:
            await s.delete(inst)
    ctl.groups.invalidate()
    if inst is not None and inst.server_group:
        await ctl.groups.notify(peer_view(inst, "deleted"), inst.server_group)
    ctl.metrics.forget_instance(instance_id)
    return inst is not None
