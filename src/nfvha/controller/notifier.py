"""The notifier: delivers the outbox to every subscriber, at least once, signed.

One worker per subscription, so a slow or dead receiver delays only its own deliveries.
Each POST carries the event's stored body unchanged (retries included) and
`X-Nfvha-Signature: sha256=<HMAC-SHA256 of the body with the subscription's secret>`;
receivers drop duplicates by the event id. A failed delivery is retried with exponential
backoff (0.1 s doubling, at most 60 s apart) up to `max_attempts` times.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import async_sessionmaker

from .. import clock
from ..store.models import Delivery, Event, Fault, HostFailure, Subscription
from .metrics import Metrics

log = logging.getLogger("nfvha.notifier")


NOTIFIES = {"nfvha.instance.fault": Fault, "nfvha.host.down": HostFailure}  # event type → what it announces


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Notifier:
    def __init__(self, sessions: async_sessionmaker, metrics: Metrics, *, timeout: float = 5.0,
                 max_attempts: int = 15) -> None:
        self.sessions = sessions
        self.metrics = metrics
        self.timeout = timeout
        self.max_attempts = max_attempts
        self._wakes: dict[str, asyncio.Event] = {}
        self._changed = asyncio.Event()

    def wake(self) -> None:
        for ev in self._wakes.values():
            ev.set()

    def subscriptions_changed(self) -> None:
        self._changed.set()

    async def run(self) -> None:
        """Keep one worker per subscription: a reconciler over the subscriptions table."""
        workers: dict[str, asyncio.Task] = {}
        async with httpx.AsyncClient(timeout=self.timeout) as client, asyncio.TaskGroup() as tg:
            while True:
                async with self.sessions() as s:
                    subs = {sub.id: sub for sub in (await s.scalars(select(Subscription))).all()}
                for sid in set(workers) - set(subs):
                    workers.pop(sid).cancel()
                    self._wakes.pop(sid, None)
                for sid in set(subs) - set(workers):
                    self._wakes[sid] = asyncio.Event()
                    workers[sid] = tg.create_task(self._worker(client, subs[sid]))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(5.0):
                        await self._changed.wait()
                self._changed.clear()

    async def _worker(self, client: httpx.AsyncClient, sub: Subscription) -> None:
        wake = self._wakes[sub.id]
        while True:
            wake.clear()
            async with self.sessions() as s:
                due = (await s.execute(
                    select(Delivery.id, Event.body, Event.fault_id, Event.type).join(Event)
                    .where(Delivery.subscription_id == sub.id, Delivery.delivered_at.is_(None),
                           Delivery.failed.is_(False), Delivery.next_attempt_at <= clock.now())
                    .order_by(Delivery.id).limit(50))).all()
                nxt = await s.scalar(select(func.min(Delivery.next_attempt_at)).where(
                    Delivery.subscription_id == sub.id, Delivery.delivered_at.is_(None), Delivery.failed.is_(False)))
            for delivery_id, body, fault_id, type_ in due:
                await self._deliver(client, sub, delivery_id, body.encode(), fault_id, type_)
            if due:
                continue
            delay = 5.0 if nxt is None else min(5.0, max(0.0, nxt - clock.now()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await wake.wait()

    async def _deliver(self, client: httpx.AsyncClient, sub: Subscription, delivery_id: int, body: bytes,
                       fault_id: str | None, type_: str) -> None:
        headers = {"Content-Type": "application/cloudevents+json", "X-Nfvha-Signature": signature(sub.secret, body)}
        error = None
        try:
            resp = await client.post(sub.url, content=body, headers=headers)
            if not 200 <= resp.status_code < 300:
                error = f"HTTP {resp.status_code}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:512]
        now = clock.now()
        self.metrics.deliveries.labels("ok" if error is None else "error").inc()
        async with self.sessions() as s, s.begin():
            d = await s.get(Delivery, delivery_id)
            if d is None:
                return  # the subscription was deleted meanwhile
            d.attempts += 1
            if error is None:
                d.delivered_at = now
                if fault_id and type_ in NOTIFIES:
                    await self._mark_notified(s, d.event_id, NOTIFIES[type_], fault_id, now)
                return
            d.last_error = error
            if d.attempts >= self.max_attempts:
                d.failed = True
                log.error("giving up delivery %s to %s: %s", delivery_id, sub.url, error)
            else:
                d.next_attempt_at = now + min(0.1 * 2 ** (d.attempts - 1), 60.0)

    async def _mark_notified(self, s, event_id: str, model: type, fault_id: str, now: float) -> None:
        """A fault is notified when its event has reached every subscriber."""
        left = await s.scalar(select(func.count()).select_from(Delivery).where(
            Delivery.event_id == event_id, Delivery.delivered_at.is_(None)))
        if left == 0:
            f = await s.get(model, fault_id)
            if f is not None and f.notified_at is None:
                f.notified_at = now
                self.metrics.notification.observe(now - f.detected_at)
