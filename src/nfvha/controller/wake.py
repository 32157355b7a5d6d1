"""A reconciler's trigger: whoever changes what it reconciles wakes it; it also runs every
`period` seconds regardless, so a missed wake-up only delays a pass."""

from __future__ import annotations

import asyncio
import contextlib


class Wake:
    def __init__(self, period: float) -> None:
        self.period = period
        self._event = asyncio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self) -> None:
        """Until woken or `period` seconds have passed."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.period):
                await self._event.wait()
        self._event.clear()
