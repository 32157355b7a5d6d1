"""Event envelopes (CloudEvents 1.0, structured JSON) and the live stream to listeners."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from .. import clock
from ..store.models import Delivery, Event, Subscription

SOURCE = "nfvha/controller"


def iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")


def envelope(event_id: str, type_: str, subject: str, t: float, data: dict[str, Any]) -> str:
    return json.dumps({"specversion": "1.0", "id": event_id, "type": type_, "source": SOURCE, "subject": subject,
                       "time": iso(t), "datacontenttype": "application/json", "data": data},
                      separators=(",", ":"))


async def add_event(s: AsyncSession, type_: str, subject: str, data: dict[str, Any],
                    fault_id: str | None = None) -> Event:
    """Put an event and one delivery per subscriber in the outbox, in the caller's transaction.
    `fault_id` names the fault or host failure it announces (its `notified_at`)."""
    subs = (await s.scalars(select(Subscription))).all()
    t = clock.now()
    event_id = uuid.uuid4().hex
    ev = Event(id=event_id, type=type_, subject=subject, fault_id=fault_id, time=t,
               body=envelope(event_id, type_, subject, t, data))
    s.add(ev)
    await s.flush()  # the deliveries reference it
    for sub in subs:
        s.add(Delivery(event_id=event_id, subscription_id=sub.id, next_attempt_at=t))
    return ev


class LiveStream:
    """Fan-out of committed events to connected listeners (SSE). A listener that falls
    `maxsize` events behind is dropped rather than slowing everyone."""

    def __init__(self, maxsize: int = 1000) -> None:
        self.maxsize = maxsize
        self._queues: set[asyncio.Queue[Event]] = set()

    def publish(self, ev: Event) -> None:
        for q in list(self._queues):
            try:
                q.put_nowait(ev)
            except asyncio.QueueFull:
                self._queues.discard(q)

    def listen(self) -> asyncio.Queue[Event]:
        q: asyncio.Queue[Event] = asyncio.Queue(self.maxsize)
        self._queues.add(q)
        return q

    def listening(self, q: asyncio.Queue) -> bool:
        return q in self._queues

    def leave(self, q: asyncio.Queue) -> None:
        self._queues.discard(q)
