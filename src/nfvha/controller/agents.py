"""The agents connected to this controller, and commands to them (request → result)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable

from fastapi import WebSocket, WebSocketDisconnect
from pydantic import ValidationError

from ..control import Ack, Command, Deliver, Delivery, FromAgent, Hello, HostBeat, Result, Welcome

log = logging.getLogger("nfvha.controller")
COMMAND_TIMEOUT = 30.0  # a graceful stop takes up to 5 s; a restart a little more
INBOX = 10_000  # messages read from an agent and not yet handled; beyond, reading waits
BEAT = HostBeat().model_dump_json()  # the host heartbeat, recognised without parsing
NOT_LEADER = 4001  # WebSocket close code: the reason names the leader, where the agent goes next


class AgentUnavailableError(Exception):
    pass


class AgentConn:
    def __init__(self, host: str, ws: WebSocket) -> None:
        self.host = host
        self.ws = ws
        self.pending: dict[str, asyncio.Future[Result]] = {}
        self._send_lock = asyncio.Lock()

    async def send(self, msg: Ack | Command | Welcome | Deliver) -> None:
        async with self._send_lock:
            await self.ws.send_text(msg.model_dump_json())


class AgentHub:
    """`on_hello` returns the welcome for a host; `on_message` handles reports and returns
    whether to acknowledge them (only once stored)."""

    def __init__(self, on_hello: Callable[[Hello], Awaitable[Welcome]],
                 on_message: Callable[[str, object], Awaitable[bool]],
                 on_disconnect: Callable[[str], Awaitable[None]], on_seen: Callable[[str], None],
                 refusal: Callable[[], str | None] = lambda: None) -> None:
        self.on_hello = on_hello
        self.on_message = on_message
        self.on_disconnect = on_disconnect
        self.on_seen = on_seen  # every message is a sign of the host's life
        self.refusal = refusal  # why agents may not connect now (a follower: who leads), or None
        self.conns: dict[str, AgentConn] = {}

    def connected(self, host: str) -> bool:
        return host in self.conns

    def hosts(self) -> list[str]:
        """The hosts with an agent connected."""
        return list(self.conns)

    async def deliver(self, items: dict[str, list[Delivery]]) -> None:
        """Server-group messages, by host; a host without its agent now misses them (best effort)."""
        for host, batch in items.items():
            conn = self.conns.get(host)
            if conn is not None and batch:
                try:
                    await conn.send(Deliver(items=batch))
                except (WebSocketDisconnect, RuntimeError):
                    pass  # it is going away

    def drop(self, host: str) -> None:
        """The host was found down: forget its connection. What still arrives on it (a fenced
        host's last heartbeats, flushed when its link returns) is stale and ignored."""
        conn = self.conns.pop(host, None)
        if conn is not None:
            self._fail_pending(conn)

    @staticmethod
    def _fail_pending(conn: AgentConn) -> None:
        for fut in conn.pending.values():
            if not fut.done():
                fut.set_exception(AgentUnavailableError(f"agent of host {conn.host} disconnected"))

    async def call(self, host: str, cmd: Command) -> Result:
        conn = self.conns.get(host)
        if conn is None:
            raise AgentUnavailableError(f"no agent connected for host {host}")
        cmd = cmd.model_copy(update={"id": uuid.uuid4().hex})
        fut: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        conn.pending[cmd.id] = fut
        try:
            async with asyncio.timeout(COMMAND_TIMEOUT):
                await conn.send(cmd)
                return await fut
        except TimeoutError:
            raise AgentUnavailableError(
                f"agent of host {host} did not answer '{cmd.op}' within {COMMAND_TIMEOUT:.0f}s") from None
        finally:
            conn.pending.pop(cmd.id, None)

    async def serve(self, ws: WebSocket) -> None:
        try:
            await self._serve(ws)
        except* WebSocketDisconnect:
            pass  # the agent went away; its host is marked disconnected
        except* Exception:
            # e.g. the store failed: drop the connection; the agent reconnects and re-sends
            # what was not acknowledged
            log.exception("agent connection failed")
            await ws.close(code=1011)

    async def _process(self, conn: AgentConn, inbox: asyncio.Queue[str]) -> None:
        """The agent's messages, in order."""
        while True:
            raw = await inbox.get()
            try:
                msg = FromAgent.validate_json(raw)
            except ValidationError as exc:
                log.warning("agent %s sent an invalid message: %s", conn.host, exc.errors()[0])
                continue
            if isinstance(msg, Result):
                fut = conn.pending.get(msg.id)
                if fut is not None and not fut.done():
                    fut.set_result(msg)
            elif await self.on_message(conn.host, msg):
                await conn.send(Ack(id=msg.id))  # type: ignore[attr-defined]

    async def close_all(self, reason: str) -> None:
        """This controller stops leading: every agent goes to the next one."""
        conns, self.conns = self.conns, {}
        for conn in conns.values():
            self._fail_pending(conn)

        async def close(conn: AgentConn) -> None:
            # the close handshake is a courtesy: an agent that does not answer it must not hold
            # up the step-down (nor a shutdown)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(0.5):
                    await conn.ws.close(code=NOT_LEADER, reason=reason[:120])

        await asyncio.gather(*(close(c) for c in conns.values()))

    async def _serve(self, ws: WebSocket) -> None:
        await ws.accept()
        refusal = self.refusal()
        if refusal is not None:
            await ws.close(code=NOT_LEADER, reason=refusal[:120])
            return
        try:
            hello = FromAgent.validate_json(await ws.receive_text())
        except ValidationError as exc:
            await ws.close(code=1008, reason=f"bad hello: {exc.errors()[0]['msg']}"[:120])
            return
        if not isinstance(hello, Hello):
            await ws.close(code=1008, reason="the first message must be hello")
            return
        conn = AgentConn(hello.host, ws)
        welcome = await self.on_hello(hello)
        async with conn._send_lock:  # no command may overtake the welcome
            # register before closing the old connection, whose clean-up then leaves the host connected
            old, self.conns[hello.host] = self.conns.get(hello.host), conn
            if old is not None:
                await old.ws.close(code=1012, reason="replaced by a newer connection")
            await ws.send_text(welcome.model_dump_json())
        log.info("agent %s connected", hello.host)
        inbox: asyncio.Queue[str] = asyncio.Queue(INBOX)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._process(conn, inbox))
                while True:
                    raw = await ws.receive_text()
                    if self.conns.get(hello.host) is not conn:  # dropped: its host was found down
                        await ws.close(code=1001, reason="this host was declared down")
                        return
                    # a sign of life counts on arrival: it must not wait behind the store's work
                    self.on_seen(hello.host)
                    if raw != BEAT:
                        await inbox.put(raw)
        finally:
            self._fail_pending(conn)
            if self.conns.get(hello.host) is conn:
                del self.conns[hello.host]
                await self.on_disconnect(hello.host)
            log.info("agent %s disconnected", hello.host)
