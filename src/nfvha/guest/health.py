"""Application health checks the guest daemon runs on each challenge (HB-6)."""

from __future__ import annotations

import asyncio
import inspect
import urllib.error
import urllib.request
from typing import Any, Awaitable, Callable, Sequence, Tuple, Union

Result = Tuple[bool, str]
CheckFn = Callable[[], Union[bool, Result, Awaitable[Union[bool, Result]]]]


class HealthCheck:
    """Always healthy: the daemon answering at all proves the guest schedules it."""

    timeout = 5.0

    async def run(self) -> Result:
        return True, ""

    async def check(self, timeout: float) -> Result:
        """Run with a deadline: a check that hangs is an unhealthy application."""
        limit = min(timeout, self.timeout)
        try:
            return await asyncio.wait_for(self.run(), limit)
        except asyncio.TimeoutError:
            return False, f"health check timed out after {round(limit * 1000)} ms"
        except Exception as exc:  # a broken check is an unhealthy application, not a dead daemon
            return False, f"health check failed: {exc!r}"[:224]


class CommandCheck(HealthCheck):
    """Healthy iff the command exits 0 within the timeout."""

    def __init__(self, argv: Sequence[str], timeout: float = 2.0) -> None:
        self.argv: list[str] = list(argv)
        self.timeout = timeout

    async def run(self) -> Result:
        proc = await asyncio.create_subprocess_exec(*self.argv, stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.DEVNULL,
                                                    stderr=asyncio.subprocess.DEVNULL)
        try:
            code = await proc.wait()
        except asyncio.CancelledError:
            proc.kill()
            await proc.wait()
            raise
        return (True, "") if code == 0 else (False, f"health command exited {code}")


class HttpCheck(HealthCheck):
    """Healthy iff a GET of the URL answers 2xx within the timeout."""

    def __init__(self, url: str, timeout: float = 2.0) -> None:
        self.url = url
        self.timeout = timeout

    async def run(self) -> Result:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self._get)

    def _get(self) -> Result:
        try:
            with urllib.request.urlopen(self.url, timeout=self.timeout) as resp:
                status = resp.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except (OSError, ValueError) as exc:
            return False, f"GET {self.url}: {exc}"[:224]
        return (True, "") if 200 <= status < 300 else (False, f"GET {self.url}: HTTP {status}"[:224])


class CallableCheck(HealthCheck):
    """A Python function (or coroutine function) of the application's own.

    It returns a bool or (bool, message); a synchronous one runs in a thread so that a
    slow check cannot stall the daemon's answers.
    """

    def __init__(self, fn: CheckFn, timeout: float = 2.0) -> None:
        self.fn = fn
        self.timeout = timeout

    async def run(self) -> Result:
        if inspect.iscoroutinefunction(self.fn):
            value: Any = await self.fn()
        else:
            value = await asyncio.get_running_loop().run_in_executor(None, self.fn)
        if isinstance(value, tuple):
            return bool(value[0]), str(value[1])[:224]
        return bool(value), ""
