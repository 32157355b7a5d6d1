"""A guest that attacks its channel, then behaves: what an untrusted VM may send.

Serves the channel like any instance; on the agent's connection it sends garbage, a 1 MB
line, invalid JSON, wrong types, unknown apps and message types, then floods frames at
10,000 per second for 2 seconds, then registers and heartbeats properly.
"""

import asyncio
import json
import sys

from nfvha.hatest import simguest


async def main(path: str) -> None:
    loop = asyncio.get_running_loop()
    done = asyncio.Event()

    async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        def frame(app: str, data: object, **base: object) -> bytes:
            return b"\n" + json.dumps({"version": 1, "app": app, "seq": 1, "data": data, **base}).encode() + b"\n"

        attacks = [b"\x00\xff garbage \xfe\n", b"A" * 1_000_000 + b"\n", b"{not json}\n", b"[1,2,3]\n",
                   frame("heartbeat", {"msg_type": "init", "invocation_id": 5, "name": "x",
                                       "heartbeat_interval_ms": "fast"}),
                   frame("chess", {"msg_type": "move"}), frame("heartbeat", {"msg_type": "dance"}),
                   frame("heartbeat", {"msg_type": "init"}, version=9)]
        for a in attacks:
            writer.write(a)
            await writer.drain()
        flood = frame("heartbeat", {"msg_type": "challenge_response", "heartbeat_response": 1,
                                    "heartbeat_health": "healthy"}) * 100
        end = loop.time() + 2.0
        while loop.time() < end:  # 100 frames every 10 ms
            writer.write(flood)
            await writer.drain()
            await asyncio.sleep(0.01)
        await simguest.serve(reader, writer, "hostile", 100)
        done.set()

    server = await asyncio.start_unix_server(on_conn, path)
    async with server:
        await done.wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
