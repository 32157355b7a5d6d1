"""Server-group routing: guest → its agent → here → the agents of the other members → their guests.

The platform stamps `source_instance`, a message never leaves its group, and a broadcast
never returns to its sender. Broadcasts route from an in-memory copy of the memberships and
locations (a store round trip per message would be most of the fan-out time); the API drops
that copy whenever membership or a location changes. Status answers come from the store.
"""

from __future__ import annotations

from collections import defaultdict

from prometheus_client import Counter
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from .. import clock
from ..control import Delivery, GroupMessage
from ..store.models import Instance
from ..wire import server_group as sg
from ..wire.messages import to_data
from .agents import AgentHub
from .events import iso


def peer_view(inst: Instance, state: str | None = None) -> dict:
    """An instance as its peers see it: a heartbeat fault shows as state `fault`."""
    shown = state or ("fault" if inst.heartbeat_status == "faulted" else inst.state)
    return {"id": inst.id, "name": inst.name, "state": shown, "host": inst.host, "updated_at": iso(inst.updated_at)}


class GroupRouter:
    def __init__(self, sessions: async_sessionmaker, hub: AgentHub, counted: Counter) -> None:
        self.sessions = sessions
        self.hub = hub
        self.counted = counted  # by result: routed, or why it was dropped
        self._routes: dict[str, tuple[str | None, str]] | None = None  # instance → (group, host)

    def invalidate(self) -> None:
        """Membership or a location changed: reload the routes at the next message."""
        self._routes = None

    async def _route_table(self) -> dict[str, tuple[str | None, str]]:
        if self._routes is None:
            async with self.sessions() as s:
                rows = (await s.execute(select(Instance.id, Instance.server_group, Instance.host))).all()
            self._routes = {iid: (group, host) for iid, group, host in rows}
        return self._routes

    async def _members(self, s, group_id: str) -> list[Instance]:
        return list((await s.scalars(select(Instance).where(Instance.server_group == group_id)
                                     .order_by(Instance.created_at))).all())

    async def from_guest(self, host: str, msg: GroupMessage) -> None:
        routes = await self._route_table()
        iid = msg.instance_id
        group, at = routes.get(iid, (None, ""))
        if at != host:
            self.counted.labels("unknown_instance").inc()  # deleted, or a stale message from a host it left
            return
        kind = msg.data.get("msg_type")
        if group is None:
            self.counted.labels("no_group").inc()
            nack = sg.Nack(orig_msg_type=str(kind or "")[:64], log_msg="this instance is in no server group")
            await self.hub.deliver({host: [Delivery(instance_id=iid, data=to_data(nack))]})
            return
        out: dict[str, list[Delivery]] = defaultdict(list)
        if kind == "broadcast":
            data = to_data(sg.BroadcastDelivery(data=str(msg.data.get("data", ""))[:sg.MAX_DATA_BYTES],
                                                source_instance=iid))
            for member, (g, member_host) in routes.items():
                if g == group and member != iid:
                    out[member_host].append(Delivery(instance_id=member, data=data))
        elif kind == "status_query":
            seq = int(msg.data.get("seq", 0))
            async with self.sessions() as s:
                members = await self._members(s, group)
            out[host] = [Delivery(instance_id=iid, data=to_data(sg.StatusResponse(seq, peer_view(m))))
                         for m in members]
            out[host].append(Delivery(instance_id=iid, data=to_data(sg.StatusResponseDone(seq))))
        else:
            self.counted.labels("unroutable").inc()
            return
        self.counted.labels("routed").inc()
        await self.hub.deliver(out)

    async def notify(self, subject: dict, group_id: str) -> None:
        """A member's state changed (`subject` is its peer view): tell the others."""
        async with self.sessions() as s:
            members = await self._members(s, group_id)
        data = to_data(sg.Notification(instance=subject, timestamp=iso(clock.now()) or ""))
        out: dict[str, list[Delivery]] = defaultdict(list)
        for m in members:
            if m.id != subject["id"]:
                out[m.host].append(Delivery(instance_id=m.id, data=data))
        await self.hub.deliver(out)
