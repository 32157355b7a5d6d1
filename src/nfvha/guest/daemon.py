"""The guest daemon: registers with the host, answers challenges with the app's health.

Standard library only (runs in any guest image). Use it as a program
(`python -m nfvha.guest`) or as a library:

    daemon = GuestDaemon("auto", GuestConfig(name="vnf-a", interval_ms=500), health=my_check)
    asyncio.run(daemon.run())
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import uuid
from dataclasses import dataclass, field
from typing import Any

from ..wire import heartbeat
from ..wire import server_group as sg
from ..wire.channel import GuestChannel, Output
from .group import GroupClient
from .health import CallableCheck, CheckFn, HealthCheck, Result
from .localapi import LocalApi
from .transport import Transport, open_transport
from .votes import Votes


@dataclass
class GuestConfig:
    name: str = field(default_factory=lambda: socket.gethostname()[:64])
    interval_ms: int = 1000
    corrective_action: str = "reboot"
    vote_secs: int = 10
    shutdown_notice_secs: int = 10
    init_retry_ms: int = 500
    verbose: bool = False

    def init(self) -> heartbeat.Init:
        # validate here with the protocol's own table, so a bad flag fails at start-up
        data = {"msg_type": "init", "invocation_id": uuid.uuid4().hex, "name": self.name,
                "heartbeat_interval_ms": self.interval_ms, "corrective_action": self.corrective_action,
                "vote_secs": self.vote_secs, "shutdown_notice_secs": self.shutdown_notice_secs}
        return heartbeat.parse(data, "guest")


class GuestDaemon:
    def __init__(self, channel: str, config: GuestConfig | None = None,
                 health: HealthCheck | CheckFn | None = None, api_socket: str | None = None) -> None:
        self.config = config or GuestConfig()
        if health is None:
            health = HealthCheck()
        elif not isinstance(health, HealthCheck):
            health = CallableCheck(health)
        self.health: HealthCheck = health
        self.chan = GuestChannel(self.config.init(), init_retry=self.config.init_retry_ms / 1000)
        self.channel_spec = channel
        self.forced_unhealthy: str | None = None  # set by SIGUSR1: fault injection for tests and demos
        self._transport: Transport | None = None
        self._wake: asyncio.Event | None = None
        self._stop: asyncio.Event | None = None
        self._exit_msg = "guest daemon stopping"
        self._checks: set[asyncio.Task] = set()
        self.group = GroupClient(lambda msg: self._write(self.chan.send(msg)))
        self.votes = Votes()
        self.api = LocalApi(api_socket, self.group, self.votes) if api_socket else None
        self._check: asyncio.Future | None = None  # the health check in flight
        self._last: Result = (True, "")  # the latest finished check's result

    def stop(self, log_msg: str = "guest daemon stopping") -> None:
        """Leave gracefully: the host gets `exit` and raises no fault."""
        self._exit_msg = log_msg
        if self._stop is not None:
            self._stop.set()

    async def run(self, handle_signals: bool = True) -> None:
        loop = asyncio.get_running_loop()
        self._wake, self._stop = asyncio.Event(), asyncio.Event()
        self._transport = open_transport(self.channel_spec, self._on_connect, self._on_data)
        await self._transport.start()
        if self.api is not None:
            try:
                await self.api.start()
            except OSError as exc:  # heartbeating matters more than the local socket
                print(f"nfvha-guest: no local socket at {self.api.path}: {exc}", file=sys.stderr, flush=True)
                self.api = None
        if handle_signals:
            loop.add_signal_handler(signal.SIGTERM, self.stop)
            loop.add_signal_handler(signal.SIGINT, self.stop)
            loop.add_signal_handler(signal.SIGUSR1, self._force_unhealthy)
            loop.add_signal_handler(signal.SIGUSR2, self._clear_unhealthy)
        self._log(f"serving {self.channel_spec} as '{self.config.name}', interval {self.config.interval_ms} ms")
        ticker = asyncio.ensure_future(self._tick_loop())
        try:
            await self._stop.wait()
            self._write(self.chan.exit(self._exit_msg))
        finally:
            # the ticker ends on the stop flag, not by cancellation: before 3.12, wait_for can
            # swallow a cancel that races with its wake-up
            self._stop.set()
            self._wake.set()
            for task in self._checks:
                task.cancel()
            await asyncio.gather(ticker, *self._checks, return_exceptions=True)
            if self.api is not None:
                await self.api.close()
            await self._transport.close()
            if handle_signals:
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2):
                    loop.remove_signal_handler(sig)

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _write(self, out: Output) -> None:
        if out.data and self._transport is not None:
            self._transport.write(out.data)
        for ev in out.events:
            if getattr(ev, "app", None) == sg.TABLE.app:
                self.group.handle(ev)
            elif isinstance(ev, heartbeat.ActionNotify):
                self._track(self._vote(ev))
            elif isinstance(ev, heartbeat.ChallengeReceived):
                self._track(self._answer(ev.value))
        if self._wake is not None:
            self._wake.set()

    def _on_connect(self) -> None:
        self._log("host connected: registering")
        self._write(self.chan.connected(self._now()))

    def _on_data(self, data: bytes) -> None:
        self._write(self.chan.receive_data(data, self._now()))

    def _track(self, coro: Any) -> asyncio.Future:
        """Run a task the daemon awaits (or cancels) when it stops."""
        task = asyncio.ensure_future(coro)
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)
        return task

    async def _vote(self, ev: heartbeat.ActionNotify) -> None:
        response = await self.votes.decide(ev)
        self._log(f"{ev.notification_type} {ev.event_type}: {response.vote_result} {response.log_msg}".rstrip())
        self._write(self.chan.send(response))

    async def _answer(self, value: int) -> None:
        """Answer within half an interval, whatever the check does.

        A check slower than that (a loaded or emulated guest) goes on and its result answers
        a later challenge; only the check's own timeout makes a slow check a fault.
        """
        if self.forced_unhealthy:
            healthy, msg = False, self.forced_unhealthy
        else:
            if self._check is None or self._check.done():
                self._check = self._track(self.health.check(self.health.timeout))
                self._check.add_done_callback(self._checked)
            try:
                healthy, msg = await asyncio.wait_for(asyncio.shield(self._check), self.chan.heartbeat.interval * 0.5)
            except asyncio.TimeoutError:
                healthy, msg = self._last
        self._write(self.chan.respond(value, healthy, msg))

    def _checked(self, check: asyncio.Future) -> None:
        if not check.cancelled():
            self._last = check.result()

    async def _tick_loop(self) -> None:
        assert self._wake is not None and self._stop is not None
        while not self._stop.is_set():
            deadline = self.chan.next_deadline()
            delay = None if deadline is None else max(0.0, deadline - self._now())
            try:
                await asyncio.wait_for(self._wake.wait(), delay)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            out = self.chan.tick(self._now())
            if out.data and self._transport is not None:
                self._transport.write(out.data)

    def _force_unhealthy(self) -> None:
        self.forced_unhealthy = "unhealthy by fault injection (SIGUSR1)"

    def _clear_unhealthy(self) -> None:
        self.forced_unhealthy = None

    def _log(self, msg: str) -> None:
        if self.config.verbose:
            print(f"nfvha-guest[{os.getpid()}]: {msg}", file=sys.stderr, flush=True)
