"""The controller process: store, agent hub, inspector, recovery, notifier and the API."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from pathlib import Path

import uvicorn

from ..control import FaultReport, GroupMessage, Hello, RecoveredReport, StateReport, Welcome
from ..store.db import open_store
from ..store.models import Event
from .agents import AgentHub
from .api import create_app
from .evacuation import HostRecovery
from .events import LiveStream
from .fencing import FenceDriver, NoFence
from .groups import GroupRouter
from .hosts import HostMonitor
from .inspector import Inspector
from .inventory import Inventory
from .liveness import LivenessConfig
from .metrics import Metrics
from .notifier import Notifier
from .recovery import Recovery
from .replicas import ReplicaSets
from .sla import LEVELS

log = logging.getLogger("nfvha.controller")


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, ready: asyncio.Event) -> None:
        super().__init__(config)
        self.ready = ready

    @contextlib.contextmanager
    def capture_signals(self):
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()


class Controller:
    def __init__(self, state_dir: Path, sla: str = "SAL1", fence: FenceDriver | None = None,
                 liveness: LivenessConfig | None = None) -> None:
        if sla not in LEVELS:
            raise ValueError(f"sla must be one of {', '.join(LEVELS)}, got {sla!r}")
        self.state_dir = state_dir
        self.sla = sla
        self.fence = fence or NoFence()
        self.liveness = liveness or LivenessConfig()
        self.live = LiveStream()
        self.port: int | None = None
        self.ready = asyncio.Event()
        self.placement_lock = asyncio.Lock()

    def _on_event(self, ev: Event) -> None:
        self.metrics.events.labels(ev.type).inc()
        self.live.publish(ev)
        self.notifier.wake()
        self.recovery.wake()
        self.replicas.wake()

    def _seen(self, host: str) -> None:
        self.hosts.seen(host)

    async def _host_returned(self, s, host: str) -> None:
        await self.host_recovery.host_returned(s, host)

    async def _on_peer_change(self, view: dict, group_id: str) -> None:
        await self.groups.notify(view, group_id)

    async def _on_message(self, host: str, msg: object) -> bool:
        if isinstance(msg, GroupMessage):
            await self.groups.from_guest(host, msg)
            return False
        if isinstance(msg, FaultReport):
            await self.inspector.record_fault(host, msg)
            return True
        if isinstance(msg, RecoveredReport):
            await self.inspector.record_recovery(msg)
            return True
        if isinstance(msg, StateReport):
            await self.inventory.update(host, msg.instance)
            self.metrics.instance_errors(msg.instance.id, msg.instance.protocol_errors)
            if msg.instance.state in ("exited", "failed"):
                self.recovery.wake()
            if msg.instance.heartbeat in ("heartbeating", "disabled"):
                self.host_recovery.wake()  # an evacuated instance may be up
        return False

    async def _on_hello(self, hello: Hello) -> Welcome:
        welcome = await self.inventory.hello(hello)
        self.hosts.hello(hello.host, hello.probe)
        self.groups.invalidate()  # it may have adopted instances
        self.recovery.wake()
        self.host_recovery.wake()  # a host with room, perhaps
        self.replicas.wake()
        return welcome

    async def _on_disconnect(self, host: str) -> None:
        self.hosts.lost(host)
        await self.inventory.disconnected(host)

    async def run(self, host: str = "127.0.0.1", port: int = 7470) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        engine, self.sessions = await open_store(self.state_dir / "nfvha.db")
        self.inventory = Inventory(self.sessions, self._on_peer_change, self._host_returned)
        await self.inventory.reset_hosts()
        self.hub = AgentHub(self._on_hello, self._on_message, self._on_disconnect, self._seen)
        self.metrics = Metrics(lambda: len(self.hub.conns))
        self.groups = GroupRouter(self.sessions, self.hub, self.metrics.group_messages)
        self.inspector = Inspector(self.sessions, self.metrics, self._on_event)
        self.recovery = Recovery(self.sessions, self.hub)
        self.notifier = Notifier(self.sessions, self.metrics)
        self.host_recovery = HostRecovery(self, self.fence, self._on_event)
        self.hosts = HostMonitor(self.sessions, self.host_recovery.host_down, self._on_event, self.liveness)
        self.replicas = ReplicaSets(self)
        sock = socket.create_server((host, port), reuse_port=False)
        self.port = sock.getsockname()[1]
        server = _Server(uvicorn.Config(create_app(self), log_level="warning", lifespan="off",
                                        ws_max_size=2**20, timeout_graceful_shutdown=1), self.ready)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(server.serve(sockets=[sock]))
                tg.create_task(self.recovery.run())
                tg.create_task(self.notifier.run())
                tg.create_task(self.hosts.run())
                tg.create_task(self.host_recovery.run())
                tg.create_task(self.replicas.run())
        finally:
            sock.close()
            await engine.dispose()
