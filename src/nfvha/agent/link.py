"""The agent's connection to the controller: reports that survive a controller outage.

Reports (faults, recoveries) stay in `unacked` until the controller acknowledges them,
which it does only after storing them; every (re)connection re-sends them all, and a
report unacknowledged for `resend_after` seconds is sent again. Report ids make the
re-sends harmless.

Given a cluster's controllers (comma-separated URLs), the link tries them in turn; a
follower refuses it (close code 4001) naming the leader, which it then tries at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from pydantic import BaseModel, ValidationError
from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException

from ..control import Ack, Command, Deliver, Hello, ToAgent, Welcome

log = logging.getLogger("nfvha.agent")


class ControllerLink:
    def __init__(self, url: str, hello: Callable[[], Hello], on_welcome: Callable[[Welcome], Awaitable[None]],
                 on_command: Callable[[Command], None], on_deliver: Callable[[Deliver], None], *,
                 resend_after: float = 2.0) -> None:
        self.urls = [u.strip() for u in url.split(",")]
        self.url = self.urls[0]
        self.hello = hello
        self.on_welcome = on_welcome
        self.on_command = on_command
        self.on_deliver = on_deliver
        self.resend_after = resend_after
        self.unacked: dict[str, BaseModel] = {}
        self.connected = asyncio.Event()
        self._out: asyncio.Queue[BaseModel] = asyncio.Queue()
        self._sent_at: dict[str, float] = {}

    def report(self, msg: BaseModel) -> None:
        """Send a fault or recovery report; it is kept until acknowledged."""
        self.unacked[msg.id] = msg  # type: ignore[attr-defined]
        self._out.put_nowait(msg)

    def send(self, msg: BaseModel) -> None:
        """Send a message that may be lost (state, results): the next hello restates it."""
        if self.connected.is_set():
            self._out.put_nowait(msg)

    async def run(self) -> None:
        backoff, cap, turn = 0.05, 2.0 if len(self.urls) == 1 else 0.5, 0
        while True:
            leader = None
            try:
                async with connect(self.url, max_size=2**20, open_timeout=2, ping_interval=5,
                                   ping_timeout=10) as ws:
                    try:
                        backoff = 0.05
                        await self._session(ws)
                    finally:
                        leader = redirect(ws.close_code, ws.close_reason)
            except* (OSError, WebSocketException, TimeoutError, ValidationError) as group:
                log.info("controller %s unreachable (%s)", self.url, group.exceptions[0])
            self.connected.clear()
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # a cancellation that met a connection error in a task group comes out as the
                # error alone (Python 3.11): the link is being stopped, so stop
                raise asyncio.CancelledError
            if leader is not None and leader != self.url:
                self.url = leader  # a follower named the leader: go there now
                continue
            turn += 1
            self.url = self.urls[turn % len(self.urls)]
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, cap)

    async def _session(self, ws) -> None:
        await ws.send(self.hello().model_dump_json())
        welcome = ToAgent.validate_json(await ws.recv())
        if not isinstance(welcome, Welcome):
            raise WebSocketException(f"expected welcome, got {welcome.type}")
        self._out = asyncio.Queue()
        for msg in self.unacked.values():
            self._out.put_nowait(msg)
        self.connected.set()  # before reconciling, so that the state it changes is sent
        await self.on_welcome(welcome)
        log.info("connected to controller %s", self.url)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._sender(ws))
            tg.create_task(self._resender())
            async for raw in ws:
                msg = ToAgent.validate_json(raw)
                if isinstance(msg, Ack):
                    self.unacked.pop(msg.id, None)
                    self._sent_at.pop(msg.id, None)
                elif isinstance(msg, Command):
                    self.on_command(msg)
                elif isinstance(msg, Deliver):
                    self.on_deliver(msg)
            raise WebSocketException("controller closed the connection")

    async def _sender(self, ws) -> None:
        while True:
            msg = await self._out.get()
            if hasattr(msg, "sent_mono"):
                msg.sent_mono = time.monotonic()
                self._sent_at[msg.id] = msg.sent_mono  # type: ignore[attr-defined]
            await ws.send(msg.model_dump_json())

    async def _resender(self) -> None:
        while True:
            await asyncio.sleep(self.resend_after / 2)
            now = time.monotonic()
            for rid, msg in list(self.unacked.items()):
                if now - self._sent_at.get(rid, now) > self.resend_after:
                    self._sent_at[rid] = now
                    self._out.put_nowait(msg)


def agent_url(api: str) -> str:
    """A controller's agent endpoint, from its API's URL."""
    return api.replace("http://", "ws://", 1).replace("https://", "wss://", 1).rstrip("/") + "/v1/agent"


def redirect(code: int | None, reason: str | None) -> str | None:
    """The leader a follower named when it refused this agent (close code 4001), if any."""
    if code != 4001 or not reason or "leader: http" not in reason:
        return None
    return agent_url(reason.rsplit("leader: ", 1)[1].strip())
