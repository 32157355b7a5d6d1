"""Replica sets (POD-1..4): a desired count of identical instances, `<set>-0` … `<set>-<n-1>`.

A reconciler: members missing from that range are created (placed like any instance, on the
up hosts), members beyond it are deleted. A member of a failed host is moved by the host
recovery like every instance (fenced first), so it keeps its name and identity.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from sqlalchemy import select

from ..store.models import Instance, ReplicaSet
from . import instances
from .schemas import InstanceCreate
from .wake import Wake

if TYPE_CHECKING:
    from .service import Controller

log = logging.getLogger("nfvha.replicas")


def plan(name: str, replicas: int, member_names: list[str]) -> tuple[list[str], list[str]]:
    """(names to create, names to delete) to make the set exactly `<name>-0` … `<name>-<replicas-1>`."""
    wanted = [f"{name}-{k}" for k in range(replicas)]
    have = set(member_names)
    return [n for n in wanted if n not in have], sorted(have - set(wanted))


class ReplicaSets:
    def __init__(self, ctl: Controller, period: float = 2.0) -> None:
        self.ctl = ctl
        self.lock = asyncio.Lock()  # one reconciliation at a time, and none while the API deletes a set
        self._wake = Wake(period)
        self._failing: dict[str, str] = {}  # by set: the last error, logged once

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            async with self.lock:
                async with self.ctl.sessions() as s:
                    sets = (await s.scalars(select(ReplicaSet))).all()
                for rs in sets:
                    await self.reconcile(rs)

    async def reconcile(self, rs: ReplicaSet) -> None:
        async with self.ctl.sessions() as s:
            have = (await s.execute(select(Instance.name, Instance.id).where(Instance.replica_set == rs.id))).all()
        ids = dict(have)
        create, delete = plan(rs.name, rs.replicas, list(ids))
        for name in delete:
            log.info("replica set %s: deleting %s (%d wanted)", rs.name, name, rs.replicas)
            await instances.delete(self.ctl, ids[name])
        for name in create:
            try:
                await instances.create(self.ctl, InstanceCreate(**rs.template, name=name), replica_set=rs.id)
                self._failing.pop(rs.id, None)
            except instances.RefusedError as exc:
                if self._failing.get(rs.id) != str(exc):
                    log.error("replica set %s: cannot create %s: %s", rs.name, name, exc)
                self._failing[rs.id] = str(exc)
                return  # the next pass tries again
