"""A simulated guest: the real guest protocol end, answering every challenge at once, healthy.
Many fit in one process (scale benchmarks); tests put hostile behaviour in front of it."""

from __future__ import annotations

import asyncio
import os

from ..wire import heartbeat as hb
from ..wire.channel import GuestChannel


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, name: str, interval_ms: int) -> None:
    loop = asyncio.get_running_loop()
    chan = GuestChannel(hb.Init(invocation_id=os.urandom(8).hex(), name=name, heartbeat_interval_ms=interval_ms))
    writer.write(chan.connected(loop.time()).data)
    while data := await reader.read(65536):
        out = chan.receive_data(data, loop.time())
        for ev in out.events:
            if isinstance(ev, hb.ChallengeReceived):
                out.data += chan.respond(ev.value, True).data
        writer.write(out.data)
