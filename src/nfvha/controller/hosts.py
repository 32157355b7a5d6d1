"""The host monitor: every host's liveness from its agent's heartbeats, confirmed by a probe
on a second path when they stop, published as `nfvha.host.up` / `nfvha.host.agent_down`
(HOST-1, HOST-2). A host found down goes to the host recovery (fence, then evacuate)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from .. import clock, hostmon
from ..store.models import Event, Host
from .events import add_event
from .liveness import HostLiveness, LivenessConfig
from .wake import Wake

log = logging.getLogger("nfvha.hosts")
TICK = 0.02  # seconds between checks: small against the 0.4 s of silence that makes a suspect
STALL = 0.1  # a pass this late means the controller itself stalled (CPU starved, paused)
STARTUP_GRACE = 10.0  # after the controller starts, agents get this long to reconnect


HostDown = Callable[[str, float, float], Awaitable[None]]  # (host, last sign of life, detected): both wall


class HostMonitor:
    def __init__(self, sessions: async_sessionmaker, on_down: HostDown, on_event: Callable[[Event], None],
                 config: LivenessConfig | None = None) -> None:
        self.sessions = sessions
        self.on_down = on_down
        self.on_event = on_event
        self.config = config or LivenessConfig()
        self.hosts: dict[str, HostLiveness] = {}
        self.probes: dict[str, str | None] = {}
        self._announce: list[tuple[str, str]] = []
        self._wake = Wake(TICK)

    def state(self, host: str) -> str:
        live = self.hosts.get(host)
        return live.state if live else "unknown"

    def hello(self, host: str, probe: str | None) -> None:
        self.probes[host] = probe
        self.seen(host)

    def seen(self, host: str) -> None:
        """Any message from the host's agent: called for every one, so it stays cheap."""
        live = self.hosts.get(host)
        if live is None:
            live = self.hosts[host] = HostLiveness(self.config, time.monotonic())
        if live.beat(time.monotonic()) == "up":
            self._announce.append((host, "up"))
            self._wake.set()

    def lost(self, host: str) -> None:
        if host in self.hosts:
            self.hosts[host].lost()
            self._wake.set()

    async def run(self) -> None:
        async with self.sessions() as s:
            for h in (await s.scalars(select(Host))).all():  # known hosts must come back, or be found down
                if h.name not in self.hosts:
                    self.hosts[h.name] = HostLiveness(self.config, time.monotonic() + STARTUP_GRACE)
                    self.probes[h.name] = h.probe
        probing: set[str] = set()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._watch_stalls())
            while True:
                now = time.monotonic()
                for host, live in self.hosts.items():
                    action = None if host in probing else live.tick(now)
                    if action == "probe":
                        probing.add(host)
                        tg.create_task(self._probe(host, live, probing))
                    elif action == "agent_down":
                        log.warning("host %s: its agent is silent, the host answers its probe: nothing is moved",
                                    host)
                        self._announce.append((host, "agent_down"))
                while self._announce:
                    await self._publish(*self._announce.pop(0))
                await self._wake.wait()

    async def _watch_stalls(self) -> None:
        """The controller's own stalls (CPU starved, stopped) are not the hosts' silence."""
        while True:
            before = time.monotonic()
            await asyncio.sleep(TICK)
            late = time.monotonic() - before - TICK
            if late > STALL:
                log.warning("the controller stalled for %.0f ms: not counted against the hosts", late * 1000)
                for live in self.hosts.values():
                    live.paused(late)

    async def _probe(self, host: str, live: HostLiveness, probing: set[str]) -> None:
        try:
            target = self.probes.get(host)
            alive = False
            if target:
                addr, _, port = target.rpartition(":")
                alive = await hostmon.probe(addr, int(port), self.config.probe_window)
            outcome = live.probed(alive, time.monotonic())
        finally:
            probing.discard(host)
        if outcome == "down":
            log.error("host %s is down: silent since %.0f ms, and no answer on its second path%s", host,
                      (time.monotonic() - live.last_beat) * 1000, "" if target else " (it has none)")
            await self.on_down(host, clock.wall(live.last_beat), clock.now())

    async def _publish(self, host: str, state: str) -> None:
        async with self.sessions() as s, s.begin():
            h = await s.get(Host, host)
            if h is None:
                return
            h.state = state
            ev = await add_event(s, f"nfvha.host.{state}", host, {"host": host, "state": state})
        self.on_event(ev)
