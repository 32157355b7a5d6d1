"""The inspector: turns agents' reports into stored faults and recoveries, then hands them
to the notifier and the recovery engine — in parallel; notification never waits for repair.

Report times are the agent's monotonic clock. They are mapped onto this controller's by
the offset at receipt (receipt − `sent_mono`), which counts the report's transit as part
of detection: conservative, and sub-millisecond on one machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy.ext.asyncio import async_sessionmaker

from .. import clock
from ..control import FaultReport, RecoveredReport
from ..store.models import Event, Fault, Instance
from .events import add_event
from .metrics import Metrics
from .recovery import decide


def fault_data(f: Fault) -> dict:
    return {"fault_id": f.id, "instance_id": f.instance_id, "instance_name": f.instance_name, "host": f.host,
            "reason": f.reason, "detail": f.detail, "corrective_action": f.corrective_action,
            "recovery_action": f.recovery_action}


class Inspector:
    def __init__(self, sessions: async_sessionmaker, metrics: Metrics, on_event: Callable[[Event], None]) -> None:
        self.sessions = sessions
        self.metrics = metrics
        self.on_event = on_event  # after commit: wake notifier and recovery, feed live listeners

    async def record_fault(self, host: str, r: FaultReport) -> None:
        to_ctrl = time.monotonic() - r.sent_mono
        async with self.sessions() as s, s.begin():
            if await s.get(Fault, r.id) is not None:
                return  # a re-sent report: stored already
            inst = await s.get(Instance, r.instance_id)
            action = decide(inst.recovery if inst else "none", r.corrective_action)
            f = Fault(id=r.id, instance_id=r.instance_id, instance_name=inst.name if inst else "", host=host,
                      reason=r.reason, detail=r.detail[:512], corrective_action=r.corrective_action,
                      fault_basis=r.fault_basis,
                      fault_at=None if r.fault_mono is None else clock.wall(r.fault_mono + to_ctrl),
                      detected_at=clock.wall(r.detected_mono + to_ctrl), reported_at=clock.now(),
                      recovery_action=action, recovery_state="none" if action == "none" else "pending")
            s.add(f)
            ev = await add_event(s, "nfvha.instance.fault", r.instance_id, fault_data(f), fault_id=f.id)
        self.metrics.faults.labels(f.reason).inc()
        if f.fault_at is not None:
            self.metrics.detection.observe(f.detected_at - f.fault_at)
        self.on_event(ev)

    async def record_recovery(self, r: RecoveredReport) -> None:
        at = clock.wall(r.at_mono + time.monotonic() - r.sent_mono)
        async with self.sessions() as s, s.begin():
            f = await s.get(Fault, r.fault_id)
            if f is None or f.recovered_at is not None:
                return
            f.recovered_at = at
            f.recovery_state = "done"
            data = {**fault_data(f), "recovery_ms": round((at - f.detected_at) * 1000, 1)}
            ev = await add_event(s, "nfvha.instance.recovered", r.instance_id, data, fault_id=f.id)
        self.metrics.recovery.observe(at - f.detected_at)
        self.on_event(ev)
