"""Server-group routing: guest → its agent → here → the agents of the other members → their guests.

The platform stamps `source_instance`, a message never leaves its group, and a broadcast
never returns to its sender. Membership and locations come from the store at each message:
traffic is low-bandwidth (the agents rate-limit each guest), and the answer is always current.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict

from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from .. import clock
from ..control import Delivery, GroupMessage
from ..store.models import Instance
from ..wire import server_group as sg
from ..wire.messages import to_data
from .agents import AgentHub
from .events import iso

log = logging.getLogger("nfvha.controller")


def peer_view(inst: Instance, state: str | None = None) -> dict:
    """An instance as its peers see it: a heartbeat fault shows as state `fault`."""
    shown = state or ("fault" if inst.heartbeat_status == "faulted" else inst.state)
    return {"id": inst.id, "name": inst.name, "state": shown, "host": inst.host, "updated_at": iso(inst.updated_at)}


class GroupRouter:
    def __init__(self, sessions: async_sessionmaker, hub: AgentHub) -> None:
        self.sessions = sessions
        self.hub = hub
        self.dropped: Counter[str] = Counter()  # by reason

    async def _members(self, s, group_id: str) -> list[Instance]:
        return list((await s.scalars(select(Instance).where(Instance.server_group == group_id)
                                     .order_by(Instance.created_at))).all())

    async def from_guest(self, host: str, msg: GroupMessage) -> None:
        async with self.sessions() as s:
            inst = await s.get(Instance, msg.instance_id)
            if inst is None or inst.host != host:
                self.dropped["unknown_instance"] += 1
                return
            if inst.server_group is None:
                self.dropped["no_group"] += 1
                nack = sg.Nack(orig_msg_type=str(msg.data.get("msg_type", ""))[:64],
                               log_msg="this instance is in no server group")
                await self.hub.deliver({host: [Delivery(instance_id=inst.id, data=to_data(nack))]})
                return
            members = await self._members(s, inst.server_group)
        out: dict[str, list[Delivery]] = defaultdict(list)
        kind = msg.data.get("msg_type")
        if kind == "broadcast":
            data = to_data(sg.BroadcastDelivery(data=str(msg.data.get("data", ""))[:sg.MAX_DATA_BYTES],
                                                source_instance=inst.id))
            for m in members:
                if m.id != inst.id:
                    out[m.host].append(Delivery(instance_id=m.id, data=data))
        elif kind == "status_query":
            seq = int(msg.data.get("seq", 0))
            out[host] = [Delivery(instance_id=inst.id, data=to_data(sg.StatusResponse(seq, peer_view(m))))
                         for m in members]
            out[host].append(Delivery(instance_id=inst.id, data=to_data(sg.StatusResponseDone(seq))))
        else:
            self.dropped["unroutable"] += 1
            return
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
