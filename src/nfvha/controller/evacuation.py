"""Host recovery: a host found down is fenced, then its instances are started elsewhere.

One host failure is one record (and one `nfvha.host.down` event listing its instances), with
one evacuation per instance attached. The order is the safety: nothing of a host is started
elsewhere until its fence driver has confirmed it off (HOST-4); if fencing fails, nothing
moves and `nfvha.host.fence_failed` is raised as an alarm, retried every `fence_retry` s.

Evacuation is a reconciler over the evacuations table. Who repairs first is the instance's
`owner` (HOST-3, HOST-6): `nfvi` — the platform, at once; `vnf` — the VNF layer, which is
told (host.down, host.fenced) and may evacuate it itself (the `evacuate` action) or delete it
within `escalate_after` seconds; after that the platform acts (`escalated`).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from sqlalchemy import select, update

from .. import clock
from ..control import Command
from ..store.models import Evacuation, Event, Fault, Host, HostFailure, Instance, Segment
from .agents import AgentUnavailableError
from .events import add_event
from .fencing import FenceDriver, FenceError
from .instances import RefusedError, has_room, host_loads, members
from .inventory import spec
from .placement import PlacementError, choose_host, recovery_tiers
from .wake import Wake

if TYPE_CHECKING:
    from .service import Controller

log = logging.getLogger("nfvha.evacuation")
OPEN = ("fencing", "fence_failed", "evacuating")


def instance_up(inst: Instance) -> bool:
    """Running, and heartbeating if it heartbeats at all."""
    return inst.state == "running" and (not inst.heartbeat or inst.heartbeat_status == "heartbeating")


def failure_data(f: HostFailure, instances: list[dict] | None = None) -> dict:
    data = {"failure_id": f.id, "host": f.host, "state": f.state, "fence_driver": f.fence_driver}
    if instances is not None:
        data["instances"] = instances
    return data


class HostRecovery:
    def __init__(self, ctl: Controller, fence: FenceDriver, on_event: Callable[[Event], None], *,
                 period: float = 0.5, fence_retry: float = 10.0) -> None:
        self.ctl = ctl
        self.sessions = ctl.sessions
        self.fence = fence
        self.on_event = on_event
        self.fence_retry = fence_retry
        self._fencing: set[str] = set()
        self._next_fence: dict[str, float] = {}
        self._wake = Wake(period)

    def wake(self) -> None:
        self._wake.set()

    # ---- detection --------------------------------------------------------------------

    async def host_down(self, host: str, last_beat_at: float, detected_at: float) -> None:
        """Open the host's failure (one per outage) and announce it with its instances."""
        self.ctl.hub.drop(host)
        async with self.sessions() as s, s.begin():
            h = await s.get(Host, host)
            if h is not None:
                h.state, h.connected = "down", False
            if await s.scalar(select(HostFailure.id).where(HostFailure.host == host, HostFailure.state.in_(OPEN))):
                return  # down again before the last outage was dealt with: the same failure
            insts = (await s.scalars(select(Instance).where(Instance.host == host))).all()
            f = HostFailure(id=uuid.uuid4().hex, host=host, state="fencing", last_beat_at=last_beat_at,
                            detected_at=detected_at, fence_driver=self.fence.name)
            s.add(f)
            # the instances' own open faults: the host's recovery takes them over (one layer acts)
            await s.execute(update(Fault).where(Fault.host == host, Fault.recovery_state.in_(("pending", "acting")))
                            .values(recovery_state="superseded"))
            ev = await add_event(s, "nfvha.host.down", host, failure_data(f, [
                {"id": i.id, "name": i.name, "owner": i.owner} for i in insts]), f.id)
        self.ctl.metrics.host_detection.observe(detected_at - last_beat_at)
        self.on_event(ev)
        self.wake()

    async def host_returned(self, s, host: str) -> None:
        """The host's agent is back (in the caller's transaction, before its welcome): what
        was not started elsewhere yet stays on it, and a failure it did not fence is over."""
        await s.execute(update(Evacuation).where(Evacuation.from_host == host, Evacuation.state == "pending")
                        .values(state="cancelled", error="the host came back before the instance was moved"))
        for f in (await s.scalars(select(HostFailure).where(HostFailure.host == host,
                                                               HostFailure.state == "fence_failed"))).all():
            f.state = "host_returned"

    # ---- the reconciler -----------------------------------------------------------------

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            while True:
                await self._wake.wait()
                for fid, host in await self._to_fence():
                    tg.create_task(self._fence(fid, host))
                for ev_id, target, inst in await self._place():
                    tg.create_task(self._start(ev_id, target, inst))
                await self._complete()

    async def _to_fence(self) -> list[tuple[str, str]]:
        now = time.monotonic()
        async with self.sessions() as s:
            rows = (await s.execute(select(HostFailure.id, HostFailure.host, HostFailure.state)
                                    .where(HostFailure.state.in_(("fencing", "fence_failed"))))).all()
        due = [(fid, host) for fid, host, state in rows if fid not in self._fencing
               and (state == "fencing" or now >= self._next_fence.get(fid, 0.0))]
        self._fencing.update(fid for fid, _ in due)
        return due

    async def _fence(self, failure_id: str, host: str) -> None:
        error = None
        try:
            await self.fence.power_off(host)
        except FenceError as exc:
            error = str(exc)
        except Exception as exc:  # a driver's bug must not end host recovery for every host
            log.exception("fence driver %s failed on %s", self.fence.name, host)
            error = f"fence driver error: {exc!r}"
        finally:
            self._fencing.discard(failure_id)
        ev = None
        async with self.sessions() as s, s.begin():
            f = await s.get(HostFailure, failure_id)
            if f is None or f.state not in ("fencing", "fence_failed"):
                return
            f.fence_attempts += 1
            if error is not None:
                f.fence_error = error[:512]
                self._next_fence[failure_id] = time.monotonic() + self.fence_retry
                log.error("cannot fence %s (attempt %d): %s: its instances are not moved", host, f.fence_attempts,
                          error)
                if f.state == "fencing":  # the alarm once; the retries only log
                    f.state = "fence_failed"
                    ev = await add_event(s, "nfvha.host.fence_failed", host,
                                           {**failure_data(f), "error": f.fence_error}, f.id)
            else:
                f.state, f.fenced_at, f.fence_error = "evacuating", clock.now(), None
                for inst in (await s.scalars(select(Instance).where(Instance.host == host))).all():
                    s.add(Evacuation(failure_id=f.id, instance_id=inst.id, instance_name=inst.name, from_host=host,
                                     owner=inst.owner, state="pending",
                                     not_before=f.fenced_at + inst.escalate_after if inst.owner == "vnf" else None))
                ev = await add_event(s, "nfvha.host.fenced", host, failure_data(f), f.id)
                log.warning("host %s fenced by %s; evacuating its instances", host, self.fence.name)
        if ev is not None:
            self.on_event(ev)
        self.wake()

    async def evacuate_now(self, instance_id: str, host: str | None) -> None:
        """The VNF layer's own repair: move the instance of a fenced host now (to `host`, if given)."""
        async with self.sessions() as s, s.begin():
            ev = await s.scalar(select(Evacuation).where(Evacuation.instance_id == instance_id,
                                                         Evacuation.state == "pending"))
            if ev is None:
                inst = await s.get(Instance, instance_id)
                fencing = inst is not None and await s.scalar(select(HostFailure.id).where(
                    HostFailure.host == inst.host, HostFailure.state.in_(("fencing", "fence_failed"))))
                raise RefusedError(409, f"instance {instance_id}: its host is not fenced yet, so it cannot be started "
                                   "elsewhere" if fencing else
                                   f"instance {instance_id}: its host is not down (nothing to evacuate)")
            ev.not_before, ev.to_host, ev.requested = None, host, True
        self.wake()

    async def _place(self) -> list[tuple[int, str, Instance]]:
        """Choose hosts for the evacuations that are due, under the segments' recovery methods."""
        started = []
        async with self.ctl.placement_lock, self.sessions() as s, s.begin():
            due = (await s.scalars(select(Evacuation).where(Evacuation.state == "pending")
                                   .order_by(Evacuation.id))).all()
            now = clock.now()  # read after the rows: a fence committed meanwhile is older than this start
            due = [e for e in due if e.not_before is None or e.not_before <= now]
            if not due:
                return []
            hosts, load = await host_loads(s)
            methods = {seg.name: seg.recovery_method for seg in (await s.scalars(select(Segment))).all()}
            up = [h for h in self.ctl.hub.hosts() if self.ctl.hosts.state(h) == "up" and h in hosts]
            for ev in due:
                inst = await s.get(Instance, ev.instance_id)
                if inst is None:
                    ev.state, ev.error = "cancelled", "the instance was deleted"
                    continue
                segment = hosts[ev.from_host].segment if ev.from_host in hosts else "default"
                room = [h for h in up if h != ev.from_host and hosts[h].segment == segment
                        and has_room(hosts[h], load[h])]
                tiers = recovery_tiers(methods.get(segment, "auto"), [h for h in room if not hosts[h].reserved],
                                       [h for h in room if hosts[h].reserved])
                try:
                    policy, member_hosts = await members(s, inst.server_group, but=inst.id)
                    target = self._choose(tiers, member_hosts, policy, ev.to_host, load)
                except (PlacementError, RefusedError) as exc:
                    if ev.error != str(exc):
                        log.error("cannot evacuate %s from %s yet: %s", inst.name, ev.from_host, exc)
                    ev.error = str(exc)[:512]
                    continue
                load[target] += 1
                inst.host, inst.state, inst.heartbeat_status = target, "creating", "disabled"
                ev.to_host, ev.state, ev.started_at, ev.error = target, "starting", now, None
                ev.escalated = ev.owner == "vnf" and not ev.requested
                started.append((ev.id, target, inst))
        self.ctl.groups.invalidate()
        return started

    @staticmethod
    def _choose(tiers: list[list[str]], member_hosts: list[str], policy: str | None, requested: str | None,
                load) -> str:
        error = PlacementError("no host of the failover segment is up with room left")
        for hosts in tiers:
            if not hosts:
                continue
            try:
                return choose_host(hosts, member_hosts, policy, requested, load)
            except PlacementError as exc:
                error = exc
        raise error

    async def _start(self, ev_id: int, target: str, inst: Instance) -> None:
        try:
            result = await self.ctl.hub.call(target, Command(id="", op="ensure", instance_id=inst.id,
                                                             spec=spec(inst)))
            error = None if result.ok else result.error
        except AgentUnavailableError as exc:
            error = str(exc)
        if error is None:
            return  # done when the instance is seen up there (_complete)
        log.error("evacuating %s to %s failed: %s; will choose again", inst.name, target, error)
        async with self.sessions() as s, s.begin():
            ev = await s.get(Evacuation, ev_id)
            if ev is not None and ev.state == "starting":
                ev.state, ev.error = "pending", (error or "")[:512]
        self.wake()

    async def _complete(self) -> None:
        """An evacuated instance seen up on its new host is done (when its state said so); a
        failure whose evacuations have all ended is recovered: announce it with its numbers."""
        events = []
        async with self.sessions() as s, s.begin():
            for f in (await s.scalars(select(HostFailure).where(HostFailure.state == "evacuating"))).all():
                evs = (await s.scalars(select(Evacuation).where(Evacuation.failure_id == f.id))).all()
                for e in evs:
                    inst = await s.get(Instance, e.instance_id) if e.state == "starting" else None
                    if inst is not None and inst.host == e.to_host and instance_up(inst):
                        e.state, e.recovered_at = "done", inst.updated_at
                if any(e.state in ("pending", "starting") for e in evs):
                    continue
                f.state = "recovered"
                # reserved hosts that took over become ordinary ones (masakari's way): reserve others anew
                await s.execute(update(Host).where(Host.name.in_({e.to_host for e in evs if e.to_host}))
                                .values(reserved=False))
                f.recovered_at = max([e.recovered_at for e in evs if e.recovered_at] or [f.fenced_at or clock.now()])
                self.ctl.metrics.host_recovery.observe(f.recovered_at - f.detected_at)
                events.append(await add_event(s, "nfvha.host.recovered", f.host, failure_data(f, [
                    {"id": e.instance_id, "name": e.instance_name, "to": e.to_host, "state": e.state,
                     "escalated": e.escalated} for e in evs]) | {
                    "recovery_ms": round((f.recovered_at - f.detected_at) * 1000, 1)}, f.id))
        for ev in events:
            self.on_event(ev)
