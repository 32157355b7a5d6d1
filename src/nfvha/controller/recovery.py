"""Recovery: a reconciler over open faults. Desired: every faulted instance repaired per
policy; observed: the fault's recovery state and the instance's. Acting twice is harmless
(a restart of a restarted instance), and a missed wake-up is caught by the next pass."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from .. import clock
from ..control import Command
from ..store.models import Fault, Instance
from .agents import AgentHub, AgentUnavailableError
from .wake import Wake

log = logging.getLogger("nfvha.recovery")

GUEST_ACTIONS = {"reboot": "restart", "stop": "stop", "log": "none", "none": "none"}
POLICIES = ("auto", "restart", "stop", "none")


def decide(policy: str, corrective_action: str) -> str:
    """`auto` follows the guest's corrective action; any other policy overrides it."""
    if policy != "auto":
        return policy
    return GUEST_ACTIONS.get(corrective_action, "restart")


class Recovery:
    def __init__(self, sessions: async_sessionmaker, hub: AgentHub, *, max_attempts: int = 5,
                 act_timeout: float = 30.0, period: float = 0.5) -> None:
        self.sessions = sessions
        self.hub = hub
        self.max_attempts = max_attempts
        self.act_timeout = act_timeout  # restarted but not heartbeating by then: try again
        self._wake = Wake(period)
        self._inflight: set[str] = set()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            while True:
                await self._wake.wait()
                for fault_id, inst, action in await self._due():
                    tg.create_task(self._act(fault_id, inst, action))

    async def _due(self) -> list[tuple[str, Instance, str]]:
        now = clock.now()
        due = []
        async with self.sessions() as s, s.begin():
            faults = (await s.scalars(select(Fault).where(Fault.recovery_state.in_(("pending", "acting")))
                                      .order_by(Fault.detected_at))).all()
            for f in faults:
                inst = await s.get(Instance, f.instance_id)
                if inst is None:
                    f.recovery_state = "cancelled"
                    continue
                if inst.id in self._inflight or not self.hub.connected(inst.host):
                    continue
                if f.recovery_state == "acting":
                    since = now - (f.recovery_started_at or now)
                    stuck = inst.state in ("exited", "failed") or since > self.act_timeout
                    if not stuck or since < 0.5 * 2 ** (f.recovery_attempts - 1):
                        continue
                    if f.recovery_attempts >= self.max_attempts:
                        f.recovery_state = "failed"
                        log.error("giving up recovery of %s after %d attempts", inst.name, f.recovery_attempts)
                        continue
                f.recovery_state = "acting"
                f.recovery_attempts += 1
                f.recovery_started_at = now
                self._inflight.add(inst.id)  # one action per instance at a time
                due.append((f.id, inst, f.recovery_action))
        return due

    async def _act(self, fault_id: str, inst: Instance, action: str) -> None:
        try:
            if action == "restart":
                cmd = Command(id="", op="restart", instance_id=inst.id, graceful=False, notice=True)
            else:
                cmd = Command(id="", op="stop", instance_id=inst.id, notice=True)
            result = await self.hub.call(inst.host, cmd)
            error = result.error if not result.ok else None
        except AgentUnavailableError as exc:
            error = str(exc)
        try:
            if error is None and action == "restart":
                return  # done when the agent reports it heartbeating again
            async with self.sessions() as s, s.begin():
                f = await s.get(Fault, fault_id)
                if f is None:
                    return
                if error is None:
                    f.recovery_state = "done"
                elif f.recovery_attempts >= self.max_attempts:
                    f.recovery_state = "failed"
                    log.error("giving up recovery %s of %s: %s", action, inst.name, error)
                else:
                    f.recovery_state = "pending"  # the next pass tries again
                    log.warning("recovery %s of %s failed, will retry: %s", action, inst.name, error)
        finally:
            self._inflight.discard(inst.id)
