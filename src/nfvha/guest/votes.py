"""Lifecycle votes and notices for guest applications (standard library only).

Before the platform stops or reboots the instance on request it asks (`revocable`): every
handler may veto, within the guest's `vote_secs`. After a fault, it only tells
(`irrevocable`): an unhealthy guest cannot veto its own repair.

    def on_action(event_type, notification_type):
        if event_type == "stop" and busy():
            return False, "draining 1200 calls"    # a veto, with the reason the operator sees
        return True
    daemon.votes.on_action(on_action)

Applications on the local socket vote too (nfvha.guest.localapi: listen with votes).
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any, Callable, Tuple

from ..wire import heartbeat

ActionCallback = Callable[[str, str], Any]  # (event_type, notification_type) -> bool | (bool, reason)
Verdict = Tuple[bool, str]


class Votes:
    def __init__(self) -> None:
        self._handlers: list[ActionCallback] = []
        self._remote: list[Callable[[dict[str, Any]], None]] = []  # voters on the local socket
        self._pending: dict[str, tuple[asyncio.Future, int]] = {}

    def on_action(self, callback: ActionCallback) -> None:
        self._handlers.append(callback)

    def add_remote(self, notify: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
        """A voter on the local socket; returns how to remove it."""
        self._remote.append(notify)
        return lambda: self._remote.remove(notify) if notify in self._remote else None

    def remote_vote(self, invocation_id: str, accept: bool, reason: str = "") -> bool:
        """A socket voter's answer; False if no such vote is open."""
        entry = self._pending.get(invocation_id)
        if entry is None:
            return False
        fut, _ = entry
        if not accept and not fut.done():
            fut.set_result((False, reason or "rejected"))
        return True

    async def decide(self, ev: heartbeat.ActionNotify) -> heartbeat.ActionResponse:
        revocable = ev.notification_type == "revocable"
        verdict: Verdict | None = None
        for cb in list(self._handlers):
            try:
                result = cb(ev.event_type, ev.notification_type)
                if inspect.isawaitable(result):
                    result = await result
            except Exception as exc:  # a broken handler: reject, visibly, rather than guess
                result = (False, f"vote handler failed: {exc!r}")
            ok, why = result if isinstance(result, tuple) else (result is not False, "")
            if not ok and verdict is None:
                verdict = (False, str(why) or "rejected")
        if not revocable:
            for notify in list(self._remote):  # told, not asked
                notify(self._event(ev))
            return self._response(ev, "complete", "")
        if verdict is None and self._remote:
            verdict = await self._ask_remote(ev)
        if verdict is not None:
            return self._response(ev, "reject", verdict[1])
        return self._response(ev, "accept", "")

    async def _ask_remote(self, ev: heartbeat.ActionNotify) -> Verdict | None:
        fut = asyncio.get_running_loop().create_future()
        self._pending[ev.invocation_id] = (fut, len(self._remote))
        for notify in list(self._remote):
            notify(self._event(ev))
        # answer before the platform's own wait ends: a veto that comes too late is no veto
        wait = max(0.1, ev.timeout_ms / 1000 - 0.5)
        try:
            return await asyncio.wait_for(fut, wait)
        except asyncio.TimeoutError:
            return None  # no veto in time: accept
        finally:
            self._pending.pop(ev.invocation_id, None)

    @staticmethod
    def _event(ev: heartbeat.ActionNotify) -> dict[str, Any]:
        return {"event": "action", "invocation_id": ev.invocation_id, "event_type": ev.event_type,
                "notification_type": ev.notification_type, "timeout_ms": ev.timeout_ms}

    @staticmethod
    def _response(ev: heartbeat.ActionNotify, result: str, reason: str) -> heartbeat.ActionResponse:
        return heartbeat.ActionResponse(invocation_id=ev.invocation_id, event_type=ev.event_type,
                                        notification_type=ev.notification_type, vote_result=result,
                                        log_msg=reason[:224])
