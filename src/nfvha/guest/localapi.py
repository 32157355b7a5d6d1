"""The guest daemon's local socket: server-group messaging for applications in any language.

JSON lines over a unix socket inside the guest; one request per line, one answer per line:

    {"op": "broadcast", "data": "..."}   -> {"ok": true}
    {"op": "status"}                      -> {"ok": true, "members": [{"id", "name", "state", "host", "updated_at"}]}
    {"op": "listen"}                      -> {"ok": true}, then one line per event:
        {"event": "broadcast", "source_instance": "...", "data": "..."}
        {"event": "notification", "instance": {...}}
    {"op": "listen", "votes": true}       -> the same, plus lifecycle actions to vote on:
        {"event": "action", "invocation_id", "event_type", "notification_type", "timeout_ms"}
    {"op": "vote", "invocation_id": "...", "result": "accept" | "reject", "reason": "..."}
                                          -> {"ok": true} (before timeout_ms; silence accepts)

A bad request is answered {"ok": false, "error": "..."} and the connection stays usable.
`python -m nfvha.guest sg broadcast|status|listen` is a client of it.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

from .group import GroupClient, GroupError
from .votes import Votes

MAX_REQUEST = 8192
MAX_BACKLOG = 256 * 1024


def default_path(channel: str) -> str:
    """Beside a unix channel (the process driver's instances), else in /run."""
    env = os.environ.get("NFVHA_GUEST_SOCKET")
    if env:
        return env
    if channel.startswith("unix:"):
        return os.path.splitext(channel[5:])[0] + ".api"
    return "/run/nfvha-guest.sock"


class LocalApi:
    def __init__(self, path: str, group: GroupClient, votes: Votes) -> None:
        self.path = path
        self.group = group
        self.votes = votes
        self._server: asyncio.AbstractServer | None = None
        self._listeners: set[asyncio.StreamWriter] = set()
        self._voters: dict[asyncio.StreamWriter, Any] = {}  # writer -> how to remove it as a voter
        self._conns: set[asyncio.Task] = set()
        group.on_broadcast(lambda source, data: self._publish(
            {"event": "broadcast", "source_instance": source, "data": data}))
        group.on_notification(lambda instance: self._publish({"event": "notification", "instance": instance}))

    async def start(self) -> None:
        if os.path.exists(self.path):
            os.unlink(self.path)  # a stale socket of an earlier incarnation
        self._server = await asyncio.start_unix_server(self._serve, self.path, limit=MAX_REQUEST)
        os.chmod(self.path, 0o660)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._conns):
            task.cancel()
        await asyncio.gather(*self._conns, return_exceptions=True)
        if os.path.exists(self.path):
            os.unlink(self.path)

    def _publish(self, event: dict[str, Any]) -> None:
        for w in list(self._listeners):
            self._send(w, event)

    @staticmethod
    def _send(w: asyncio.StreamWriter, event: dict[str, Any]) -> None:
        if w.is_closing() or w.transport.get_write_buffer_size() > MAX_BACKLOG:
            return  # a listener that reads nothing loses events, not the daemon's memory
        w.write(json.dumps(event).encode() + b"\n")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._conns.add(task)
        try:
            while True:
                try:
                    line = await reader.readline()
                except ValueError:  # longer than MAX_REQUEST
                    writer.write(b'{"ok": false, "error": "request longer than 8192 bytes"}\n')
                    break
                if not line:
                    break
                answer = await self._answer(line, writer)
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._listeners.discard(writer)
            remove = self._voters.pop(writer, None)
            if remove is not None:
                remove()
            writer.close()
            if task is not None:
                self._conns.discard(task)

    async def _answer(self, line: bytes, writer: asyncio.StreamWriter) -> dict[str, Any]:
        try:
            req = json.loads(line)
        except ValueError:
            return {"ok": False, "error": "not JSON"}
        op = req.get("op") if isinstance(req, dict) else None
        try:
            if op == "broadcast":
                data = req.get("data")
                if not isinstance(data, str):
                    return {"ok": False, "error": "broadcast needs a string 'data'"}
                self.group.broadcast(data)
                return {"ok": True}
            if op == "status":
                return {"ok": True, "members": await self.group.status()}
            if op == "listen":
                self._listeners.add(writer)
                if req.get("votes") is True:
                    remove = self.votes.add_remote(lambda event: self._send(writer, event))
                    self._voters[writer] = remove
                return {"ok": True}
            if op == "vote":
                inv, result = req.get("invocation_id"), req.get("result")
                if not isinstance(inv, str) or result not in ("accept", "reject"):
                    return {"ok": False, "error": "vote needs 'invocation_id' and 'result': accept or reject"}
                if not self.votes.remote_vote(inv, result == "accept", str(req.get("reason", ""))[:224]):
                    return {"ok": False, "error": f"no open vote {inv[:64]!r} (answered too late?)"}
                return {"ok": True}
        except (ValueError, GroupError) as exc:
            return {"ok": False, "error": str(exc)}
        return {"ok": False, "error": f"unknown op {str(op)[:32]!r}: use broadcast, status or listen"}
