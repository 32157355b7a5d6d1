"""Server-group messaging for guest applications (the library side; standard library only).

    daemon = GuestDaemon("auto", GuestConfig(name="vnf-a"))
    daemon.group.on_broadcast(lambda source, data: ...)     # from another member
    daemon.group.on_notification(lambda instance: ...)      # a member's state changed
    daemon.group.broadcast("I am active")                   # to every other member
    members = await daemon.group.status()                   # every member, this one included

Best effort, as the platform's channel is: a broadcast sent while the host is away is lost.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Dict

from ..wire import server_group as sg

BroadcastCallback = Callable[[str, str], Any]  # (source instance id, data)
NotificationCallback = Callable[[Dict[str, Any]], Any]  # the member as its peers see it


class GroupError(Exception):
    """The platform refused a server-group request (e.g. this instance is in no group)."""


class GroupClient:
    def __init__(self, send: Callable[[Any], None]) -> None:
        self._send = send
        self._on_broadcast: list[BroadcastCallback] = []
        self._on_notification: list[NotificationCallback] = []
        self._seq = 0
        self._pending: dict[int, tuple[asyncio.Future, list[dict[str, Any]]]] = {}
        self.last_nack = ""

    def on_broadcast(self, callback: BroadcastCallback) -> None:
        self._on_broadcast.append(callback)

    def on_notification(self, callback: NotificationCallback) -> None:
        self._on_notification.append(callback)

    def broadcast(self, data: str) -> None:
        size = len(data.encode("utf-8"))
        if size > sg.MAX_DATA_BYTES:
            raise ValueError(f"broadcast data is {size} bytes in UTF-8; the limit is {sg.MAX_DATA_BYTES}")
        self._send(sg.Broadcast(data))

    async def status(self, timeout: float = 2.0) -> list[dict[str, Any]]:
        """Every member of this instance's group as the platform sees it, this one included."""
        self._seq = (self._seq + 1) % 2**32
        seq = self._seq
        fut = asyncio.get_running_loop().create_future()
        self._pending[seq] = (fut, [])
        try:
            self._send(sg.StatusQuery(seq))
            return await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            raise GroupError(f"no status from the platform within {timeout} s") from None
        finally:
            self._pending.pop(seq, None)

    def handle(self, ev: Any) -> None:
        """An event of app server_group from the channel."""
        if isinstance(ev, sg.BroadcastDelivery):
            for cb in list(self._on_broadcast):
                cb(ev.source_instance, ev.data)
        elif isinstance(ev, sg.Notification):
            for cb in list(self._on_notification):
                cb(dict(ev.instance))
        elif isinstance(ev, sg.StatusResponse) and ev.seq in self._pending:
            self._pending[ev.seq][1].append(dict(ev.instance))
        elif isinstance(ev, sg.StatusResponseDone) and ev.seq in self._pending:
            fut, members = self._pending[ev.seq]
            if not fut.done():
                fut.set_result(members)
        elif isinstance(ev, sg.Nack):
            self.last_nack = ev.log_msg
            if ev.orig_msg_type == "status_query":
                for fut, _ in self._pending.values():
                    if not fut.done():
                        fut.set_exception(GroupError(ev.log_msg))
