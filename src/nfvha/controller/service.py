"""The controller process: the store, the agent hub and the API, always; while it leads
(alone, or elected in a cluster), the inspector, recovery, notifier, host monitor, host
recovery and replica sets."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from pathlib import Path

import uvicorn

from .. import clock
from ..control import FaultReport, GroupMessage, Hello, RecoveredReport, StateReport, Welcome
from ..store.db import FencedError, claim, fence_sessions, open_store, store_url
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
from .leadership import Leadership, Solo
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
    """One controller. With an etcd leadership and a PostgreSQL store, several run as one
    cluster: all serve the API, one (the leader) acts."""

    def __init__(self, state_dir: Path, sla: str = "SAL1", fence: FenceDriver | None = None,
                 liveness: LivenessConfig | None = None, store: str | None = None,
                 leadership: Leadership | None = None, advertise: str | None = None) -> None:
        if sla not in LEVELS:
            raise ValueError(f"sla must be one of {', '.join(LEVELS)}, got {sla!r}")
        self.state_dir = state_dir
        self.sla = sla
        self.fence = fence or NoFence()
        self.liveness = liveness or LivenessConfig()
        self.store = store
        self.leadership = leadership or Solo()
        self.advertise = advertise
        self.url = ""
        self.acting_since: float | None = None
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

    def _refusal(self) -> str | None:
        """Why an agent may not connect here: only the leader takes agents."""
        if self.leading:
            return None
        return f"not the leader; leader: {self.leadership.leader_url or 'none yet'}"

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

    def _term(self) -> None:
        """The leader's working parts, fresh for each term: nothing of a previous term's
        in-memory view survives into the next; the store and the agents rebuild it."""
        self.inventory = Inventory(self.sessions, self._on_peer_change, self._host_returned)
        self.groups = GroupRouter(self.sessions, self.hub, self.metrics.group_messages)
        self.inspector = Inspector(self.sessions, self.metrics, self._on_event)
        self.recovery = Recovery(self.sessions, self.hub)
        self.notifier = Notifier(self.sessions, self.metrics)
        self.host_recovery = HostRecovery(self, self.fence, self._on_event)
        self.hosts = HostMonitor(self.sessions, self.host_recovery.host_down, self._on_event, self.liveness)
        self.replicas = ReplicaSets(self)

    @property
    def leading(self) -> bool:
        return self.acting_since is not None

    async def run(self, host: str = "127.0.0.1", port: int = 7470) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        engine, self.sessions = await open_store(store_url(self.store, self.state_dir))
        fence_sessions(self.sessions, lambda: self.leadership.token if self.leading else None)
        self.hub = AgentHub(self._on_hello, self._on_message, self._on_disconnect, self._seen, self._refusal)
        self.metrics = Metrics(lambda: len(self.hub.conns))
        self._term()
        sock = socket.create_server((host, port), reuse_port=False)
        self.port = sock.getsockname()[1]
        self.url = self.advertise or f"http://{host}:{self.port}"
        if isinstance(self.leadership, Solo):
            self.leadership.leader_url = self.url
        server = _Server(uvicorn.Config(create_app(self), log_level="warning", lifespan="off",
                                        ws_max_size=2**20, timeout_graceful_shutdown=1), self.ready)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(server.serve(sockets=[sock]))
                tg.create_task(self._lead())
        finally:
            sock.close()
            await engine.dispose()

    async def _lead(self) -> None:
        """Campaign; while leading, run the leader's parts until leadership cannot be proven
        (or the store names a newer leader); then stand by and campaign again."""
        while True:
            token = await self.leadership.campaign()
            try:
                await claim(self.sessions, token, self.url)
                self._term()
                await self.inventory.reset_hosts()  # agents connect to the leader: none has yet
                self.acting_since = clock.now()
                log.warning("acting as the leader (token %d)", token)
                async with asyncio.TaskGroup() as tg:
                    for part in (self.recovery, self.notifier, self.hosts, self.host_recovery, self.replicas):
                        tg.create_task(part.run())
                    await self.leadership.keep()
                    raise DeposedError("leadership lost")
            except* (DeposedError, FencedError) as group:
                log.error("no longer the leader: %s", group.exceptions[0])
            finally:
                self.acting_since = None
                await self.hub.close_all("this controller no longer leads")
                if self.leadership.token is not None:  # still holding the lease (a stop, a fenced write):
                    await self.leadership.resign()  # give it up, so that a follower takes over at once


class DeposedError(Exception):
    pass
