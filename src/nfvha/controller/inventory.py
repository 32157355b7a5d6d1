"""What the controller knows of hosts and instances, kept current from the agents."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import async_sessionmaker

from .. import clock
from ..control import Hello, InstanceSpec, InstanceStatus, Welcome
from ..store.models import Host, Instance
from .groups import peer_view


def spec(inst: Instance) -> InstanceSpec:
    return InstanceSpec(id=inst.id, name=inst.name, command=inst.command, vm=inst.vm, heartbeat=inst.heartbeat)


PeerChange = Callable[[dict, str], Awaitable[None]]  # (the member's peer view, its group id)
HostReturned = Callable[[object, str], Awaitable[None]]  # (the hello's session, host): before its welcome


class Inventory:
    def __init__(self, sessions: async_sessionmaker, on_peer_change: PeerChange | None = None,
                 on_return: HostReturned | None = None) -> None:
        self.sessions = sessions
        self.on_peer_change = on_peer_change
        self.on_return = on_return

    async def reset_hosts(self) -> None:
        """At start-up no agent is connected yet, whatever the store remembers."""
        async with self.sessions() as s, s.begin():
            await s.execute(update(Host).values(connected=False))

    async def hello(self, hello: Hello) -> Welcome:
        async with self.sessions() as s, s.begin():
            host = await s.get(Host, hello.host)
            if host is None:
                host = Host(name=hello.host)
                s.add(host)
            host.driver, host.connected, host.last_seen = hello.driver, True, clock.now()
            host.probe = hello.probe
            if hello.capacity is not None:  # the agent's --capacity, when given, wins over an operator's
                host.capacity = hello.capacity
            if self.on_return is not None:
                await self.on_return(s, hello.host)
            for st in hello.instances:
                await self._apply(s, hello.host, st)
            await self._adopt(s, hello)
            insts = (await s.scalars(select(Instance).where(Instance.host == hello.host))).all()
            return Welcome(instances=[spec(i) for i in insts])

    @staticmethod
    async def _adopt(s, hello: Hello) -> None:
        """Domains the operator marked as nfvha instances become instances of their host."""
        if not hello.discovered:
            return
        known = {(i.vm or {}).get("domain") for i in
                 (await s.scalars(select(Instance).where(Instance.host == hello.host))).all()}
        now = clock.now()
        for domain, heartbeat in hello.discovered.items():
            if domain in known:
                continue
            name = domain if not await s.scalar(select(Instance.id).where(Instance.name == domain)) \
                else f"{hello.host}-{domain}"
            s.add(Instance(id=str(uuid.uuid4()), name=name[:64], host=hello.host, command=[],
                           vm={"domain": domain}, heartbeat=heartbeat, recovery="auto", state="creating",
                           heartbeat_status="disabled", protocol_errors={}, created_at=now, updated_at=now))

    async def update(self, host: str, st: InstanceStatus) -> None:
        async with self.sessions() as s, s.begin():
            change = await self._apply(s, host, st)
        if change is not None and self.on_peer_change is not None:
            await self.on_peer_change(*change)

    @staticmethod
    async def _apply(s, host: str, st: InstanceStatus) -> tuple[dict, str] | None:
        """Apply a state report; what the instance's server group sees of it, if that changed."""
        inst = await s.get(Instance, st.id)
        if inst is None or inst.host != host:
            return None  # deleted meanwhile, or a stale report from a host it left
        before = peer_view(inst)["state"]
        inst.state, inst.heartbeat_status, inst.pid = st.state, st.heartbeat, st.pid
        inst.interval_ms, inst.protocol_errors = st.interval_ms, st.protocol_errors
        inst.updated_at = clock.now()
        view = peer_view(inst)
        return (view, inst.server_group) if inst.server_group and view["state"] != before else None

    async def disconnected(self, host: str) -> None:
        async with self.sessions() as s, s.begin():
            h = await s.get(Host, host)
            if h is not None:
                h.connected, h.last_seen = False, clock.now()
