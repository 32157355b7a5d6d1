"""A fault storm: an agent (the real agent link, no instances) reporting faults as fast as it
can to a controller cluster, while the test kills the leader."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

from ..agent.link import ControllerLink, agent_url
from ..control import FaultReport, Hello


async def storm(urls: list[str], count: int, kill_leader: Callable[[], None], kill_after: list[int],
                host: str = "storm") -> list[str]:
    """Report `count` faults, calling `kill_leader` after each number in `kill_after` of them;
    returns the report ids once every one is acknowledged (the controller has stored it)."""

    async def welcome(_w: object) -> None:
        pass

    hello = Hello(host=host, driver="process", instances=[])
    link = ControllerLink(",".join(agent_url(u) for u in urls), lambda: hello, welcome, lambda _c: None,
                          lambda _d: None, resend_after=1.0)
    ids = []
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(link.run())
        for n in range(count):
            if n in kill_after:
                await asyncio.to_thread(kill_leader)
            rid = uuid.uuid4().hex
            ids.append(rid)
            link.report(FaultReport(id=rid, instance_id=f"{host}-{n % 50}", reason="heartbeat_timeout",
                                    detail="storm", corrective_action="none", fault_mono=None, fault_basis=None,
                                    detected_mono=time.monotonic()))
            await asyncio.sleep(0.002)
        async with asyncio.timeout(120):
            while link.unacked:  # noqa: ASYNC110 -- the link has no event for "all acknowledged"
                await asyncio.sleep(0.05)
        task.cancel()
    return ids
