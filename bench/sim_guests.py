"""Many simulated guests in one process, each serving its own channel socket (for bench/scale.py).

    python bench/sim_guests.py INTERVAL_MS PATH...

Each guest registers with the given interval and answers every challenge at once, healthy.
"""

from __future__ import annotations

import asyncio
import os
import resource
import sys

from nfvha.wire import heartbeat as hb
from nfvha.wire.channel import GuestChannel


async def main(interval_ms: int, paths: list[str]) -> None:
    loop = asyncio.get_running_loop()

    def guest(name: str):  # noqa: ANN202
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            chan = GuestChannel(hb.Init(invocation_id=os.urandom(8).hex(), name=name,
                                        heartbeat_interval_ms=interval_ms))
            writer.write(chan.connected(loop.time()).data)
            while data := await reader.read(65536):
                out = chan.receive_data(data, loop.time())
                for ev in out.events:
                    if isinstance(ev, hb.ChallengeReceived):
                        out.data += chan.respond(ev.value, True).data
                writer.write(out.data)
        return serve

    servers = [await asyncio.start_unix_server(guest(f"sim-{k}"), path) for k, path in enumerate(paths)]
    print(f"serving {len(servers)} guests", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(main(int(sys.argv[1]), sys.argv[2:]))
